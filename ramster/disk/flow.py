"""The disk store's bounds: its configuration and the byte budget that makes writers wait."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ramster.disk.layout import BLOCK, record_blocks


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """Bounds of the disk store: bytes of writes in flight, batch sizes, the largest payload."""

    max_inflight_bytes: int = 8 << 20
    """Writes queued or in flight, at most; `put_many` waits beyond it."""
    max_write_bytes: int = 1 << 20
    """One write call covers at most this much (a batch is split beyond it)."""
    max_read_bytes: int = 1 << 20
    """One read call covers at most this much."""
    read_gap_blocks: int = 8
    """Records this close are read in one call, the gap read and thrown away: cheaper than a
    second system call for a few KiB."""
    max_payload: int = 64 << 10

    def __post_init__(self) -> None:
        biggest = record_blocks(self.max_payload) * BLOCK
        if not 0 < biggest <= self.max_write_bytes <= self.max_inflight_bytes:
            raise ValueError("need max_payload's record <= max_write_bytes <= max_inflight_bytes")
        if self.max_read_bytes < biggest or self.read_gap_blocks < 0:
            raise ValueError("max_read_bytes must hold the biggest record; gap must be >= 0")


class ByteBudget:
    """A first-come, first-served semaphore counted in bytes: `acquire(n)` waits until `n` more
    fit under the limit, so a slow disk makes writers wait instead of growing a queue."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Callers waiting for room."""
        return sum(not fut.done() for _, fut in self._waiters)

    async def acquire(self, n: int) -> None:
        """Wait until `n` bytes fit (after everyone who came first), then take them."""
        if not 0 < n <= self.limit:
            raise ValueError(f"cannot take {n} bytes of a budget of {self.limit}")
        if not self._waiters and self.used + n <= self.limit:
            self._take(n)
            return
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(n)  # granted just as we were cancelled
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        """Give back `n` bytes taken before."""
        self.used -= n
        assert self.used >= 0, "released more than was taken"
        self._wake()

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)
