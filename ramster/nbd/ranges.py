"""Page ranges held by an export's mutations in flight: overlapping ones run in the order they
came, the others at once (what one lock per export did for all of them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

EVERYTHING = ((0, 1 << 63),)
"""The ranges of a barrier (a flush, or a mutation that retries held pages)."""

Ranges = Sequence[tuple[int, int]]
"""[first, end) page ranges."""


def _overlap(a: Ranges, b: Ranges) -> bool:
    return any(a0 < b1 and b0 < a1 for a0, a1 in a for b0, b1 in b)


@dataclass(eq=False, slots=True)
class _Ticket:
    ranges: Ranges
    released: asyncio.Event = field(default_factory=asyncio.Event)


class RangeLocks:
    """FIFO locks over page ranges. A holder waits for every earlier ticket (running or
    waiting) that overlaps its ranges, so it never waits on a later one: no deadlock, and two
    writes to one block, or a write and a trim of it, keep their order. Tickets are bounded by
    the operations in flight (the NBD server bounds those)."""

    def __init__(self) -> None:
        self._tickets: list[_Ticket] = []

    def __len__(self) -> int:
        return len(self._tickets)

    @asynccontextmanager
    async def hold(self, ranges: Ranges) -> AsyncIterator[None]:
        """Hold the ranges (empty ones hold nothing) for the body of the `async with`."""
        ranges = [(a, b) for a, b in ranges if a < b]
        earlier = [t for t in self._tickets if _overlap(t.ranges, ranges)]
        ticket = _Ticket(ranges)
        self._tickets.append(ticket)
        try:
            for other in earlier:
                await other.released.wait()
            yield
        finally:
            self._tickets.remove(ticket)
            ticket.released.set()


def pages_of(offset: int, length: int, page_size: int) -> tuple[int, int]:
    """The [first, end) pages a byte range touches, partly or whole."""
    return offset // page_size, -(-(offset + length) // page_size)
