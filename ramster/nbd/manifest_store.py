"""Storing a replicated export's manifest pages, each in two slots (`manifest.slot_key`).

An update of a page goes to the slot that does not hold its last stored state, so that a
failed update never costs that state: a holder drops its copy of a key before it tries the
newer one, and a store refused for room would otherwise leave no copy of the page anywhere
(the next server could then not tell trimmed blocks from written ones). A rebuild takes each
page's newest slot (`manifest.newest_slots`) and tells the store which one that was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from ramster.errors import RamsterError
from ramster.nbd import manifest
from ramster.nbd.pagemap import PageMap

log = logging.getLogger(__name__)

StoreMany = Callable[[int, Sequence[int], Sequence[bytes]], Awaitable[list[bool]]]
"""The frontswap's store_many: (area, keys, pages) -> kept flags."""


class ManifestStore:
    """The manifest pages changed and not yet stored, and where each page's last stored
    state is; one store at a time (a later one carries every change since)."""

    def __init__(self, name: str, area: int, store_many: StoreMany) -> None:
        self._name = name
        self._area = area
        self._store_many = store_many
        self._lock = asyncio.Lock()
        self._dirty: dict[int, int] = {}
        """Pages changed and not yet stored, with the sequence of their last change."""
        self._changes = 0
        self._slots: dict[int, int] = {}
        """page -> the slot of its last stored state (0 if not said: a new export's blank
        pages, or a manifest from before slots)."""
        self.failures = 0

    def pending(self) -> bool:
        """Changes wait to be stored."""
        return bool(self._dirty)

    def mark(self, numbers: Iterable[int]) -> None:
        """Pages to store before the next write is answered."""
        for number in numbers:
            self._changes += 1
            self._dirty[number] = self._changes

    def stored_in(self, slots: dict[int, int]) -> None:
        """Where a rebuild found each page's last stored state."""
        self._slots.update(slots)

    async def persist(self, pages: PageMap) -> bool:
        """Store the changed pages (each into its other slot); False if any was not stored."""
        if not self._dirty:
            return True
        async with self._lock:
            # Who waited here may find its changes stored by the one before: nothing to do.
            if not self._dirty:
                return True
            taken = dict(self._dirty)
            numbers = sorted(taken)
            slots = [1 - self._slots.get(n, 0) for n in numbers]
            keys = [manifest.slot_key(n, s) for n, s in zip(numbers, slots, strict=True)]
            encoded = [manifest.encode(pages, n) for n in numbers]
            try:
                kept = await self._store_many(self._area, keys, encoded)
            except RamsterError:
                kept = [False] * len(numbers)
            for number, slot, ok in zip(numbers, slots, kept, strict=True):
                if not ok:
                    continue  # its last stored state is still in the other slot
                self._slots[number] = slot
                # A page changed again meanwhile stays to be stored (by whoever changed it).
                if self._dirty.get(number) == taken[number]:
                    del self._dirty[number]
        if all(kept):
            return True
        self.failures += 1
        if worth_logging(self.failures):
            log.error("nbd export %s: manifest pages not stored: writes get EIO", self._name)
        return False


def worth_logging(count: int) -> bool:
    """1, 2, 4, 8, ...: a failure that repeats (a client retrying) is logged ever more rarely."""
    return count & (count - 1) == 0
