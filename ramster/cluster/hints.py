"""Addresses that discovery suggests, before any of them is trusted: pure logic, no I/O.

A hint is only an address to dial. It becomes a peer when a handshake from that address names
a node; until then it costs one small entry here. The table is bounded (the oldest hint goes
when it is full), hints expire, a hint that failed is not offered again for a while, and the
next one to dial is drawn at random, so that a flood of junk announcements cannot keep a real
node's hint waiting behind it forever.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_HINTS = 64
"""Hints waiting to be dialled; more evict the oldest."""
HINT_TTL = 60.0
"""Seconds a hint waits to be dialled before it is forgotten (a live node announces again)."""
RETRY_AFTER = 30.0
"""Seconds before an address that failed (or named a node known elsewhere) is dialled again."""
MAX_FAILED = 1024
"""Failed addresses remembered at once (oldest forgotten first)."""


@dataclass(frozen=True, slots=True)
class HintStatistics:
    """Counters of the hint table."""

    pending: int
    offered: int
    dropped: int
    """Hints evicted unseen (table full) or expired."""
    taken: int
    failed: int


class Hints:
    """Bounded, expiring addresses to try, each at most once per RETRY_AFTER."""

    def __init__(
        self,
        capacity: int = MAX_HINTS,
        ttl: float = HINT_TTL,
        retry_after: float = RETRY_AFTER,
        rng: random.Random | None = None,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.retry_after = retry_after
        self._pending: dict[str, float] = {}
        self._failed: dict[str, float] = {}
        self._rng = rng if rng is not None else random.Random()
        self._offered = self._dropped = self._taken = self._failures = 0

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, address: str, now: float) -> bool:
        """Note an address to dial; False if it is pending already or failed recently."""
        until = self._failed.get(address)
        if until is not None:
            if now < until:
                return False
            del self._failed[address]
        if address in self._pending:
            return False
        self._expire(now)
        if len(self._pending) >= self.capacity:
            del self._pending[next(iter(self._pending))]
            self._dropped += 1
        self._pending[address] = now
        self._offered += 1
        return True

    def take(self, now: float) -> str | None:
        """A pending hint drawn at random (removed), or None."""
        self._expire(now)
        if not self._pending:
            return None
        address = self._rng.choice(list(self._pending))
        del self._pending[address]
        self._taken += 1
        return address

    def failed(self, address: str, now: float) -> None:
        """address did not yield a new peer: do not offer it again before RETRY_AFTER."""
        self._failures += 1
        self._failed.pop(address, None)
        if len(self._failed) >= MAX_FAILED:
            del self._failed[next(iter(self._failed))]
        self._failed[address] = now + self.retry_after

    def _expire(self, now: float) -> None:
        pending = self._pending
        while pending:
            oldest = next(iter(pending))
            if now - pending[oldest] < self.ttl:
                break
            del pending[oldest]
            self._dropped += 1

    def statistics(self) -> HintStatistics:
        """A snapshot of the counters."""
        return HintStatistics(
            pending=len(self._pending),
            offered=self._offered,
            dropped=self._dropped,
            taken=self._taken,
            failed=self._failures,
        )
