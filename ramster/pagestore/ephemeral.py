"""Ephemeral areas (cleancache's half of transcendent memory): pages a pool may drop at any
time, kept only in room no persistent page needs, and evicted coldest first, in batches.

An area is persistent unless marked; the mark is the caller's (the owner's frontswap, or the
lent pool for a peer's area). Every store that finds the budget short evicts ephemeral pages
and tries again, until it fits or no ephemeral page is left: a persistent store is never
refused while ephemeral pages hold the room it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ramster.pagestore.codec import EMPTY, RAW, SAME
from ramster.pagestore.core import COMPACT_STEP, I64, PoolCore

log = logging.getLogger(__name__)

EVICT_BATCH = 64
"""Pages evicted at least in a first round (a round is one scan of the slot table); each
further round evicts twice as many."""
MAX_COMPACTIONS = 4
"""Bounded compaction steps one store may run before it evicts more."""


class EphemeralPages(PoolCore):
    """Marking areas ephemeral, evicting their coldest pages, and stores that make room so."""

    def set_ephemeral(self, area: int, ephemeral: bool) -> None:
        """Mark an area ephemeral (its pages may be evicted) or persistent (the default)."""
        if ephemeral == (area in self._eph_areas):
            return
        if ephemeral:
            self._eph_areas.add(area)
        else:
            self._eph_areas.discard(area)
        self._eph_table[area] = ephemeral
        if self._area_pages.get(area):
            self._recount_ephemeral()

    def is_ephemeral(self, area: int) -> bool:
        """Is the area marked ephemeral?"""
        return area in self._eph_areas

    @property
    def ephemeral_pages(self) -> int:
        """Ephemeral pages kept here (not counting remote entries)."""
        return self._eph_pages

    @property
    def ephemeral_bytes(self) -> int:
        """Compressed bytes of the ephemeral pages kept here: room a persistent store can have."""
        return self._eph_bytes

    def ephemeral_keys(self) -> int:
        """Keys of ephemeral areas, kept here or recorded as remote (no scan)."""
        pages = self._area_pages
        return sum(pages.get(a, 0) for a in self._eph_areas)

    def _recount_ephemeral(self) -> None:
        """Count ephemeral pages and bytes from the slots (after a mark changed under pages)."""
        m = self._meta
        hw = self._hw
        kinds = m["kind"][:hw].astype(np.uint8, copy=False)
        mine = self._eph_table[m["area"][:hw]] & (kinds >= SAME) & (kinds <= RAW)
        raw = int(np.count_nonzero(kinds[mine] == RAW))
        self._eph_pages = int(np.count_nonzero(mine))
        self._eph_bytes = int(m["length"][:hw][mine].sum(dtype=np.int64)) + raw * self._ps

    def evict_ephemeral(self, n: int, older_than: int | None = None) -> int:
        """Drop up to n of the coldest ephemeral pages (remote entries too), only those last
        touched before tick `older_than` when given; pages evicted."""
        if n <= 0 or not self._eph_areas or not self.ephemeral_keys():
            return 0
        m = self._meta
        hw = self._hw
        areas = m["area"][:hw]
        mask = self._eph_table[areas] & (m["kind"][:hw] != EMPTY)
        if older_than is not None:
            mask &= m["tick"][:hw].astype(np.uint32, copy=False) < older_than
        live = np.flatnonzero(mask)
        if not len(live):
            return 0
        if len(live) > n:
            ticks = m["tick"][live]
            live = live[np.argpartition(ticks, n - 1)[:n]]
        chosen_areas = areas[live]
        evicted = 0
        for area in np.unique(chosen_areas).tolist():
            slots = live[chosen_areas == area].astype(np.int32)
            self._free(area, m["offset"][slots].astype(np.int64), slots)
            evicted += len(slots)
        self._c["evicts"] += evicted
        return evicted

    def evict_keys(
        self,
        area: int,
        offsets: Sequence[int] | I64,
        versions: Sequence[int],
        count: bool = True,
    ) -> int:
        """Evict pages of an ephemeral area whose stored version is still the given one (cold
        pages no holder could take; with count=False, records of copies a holder no longer
        had); pages evicted."""
        if area not in self._eph_areas or not len(offsets):
            return 0
        offs = np.asarray(offsets, dtype=np.int64)
        slots = self._index.lookup(area, offs)
        m = self._meta
        ok = (slots > 0) & (m["version"][slots] == np.asarray(versions, dtype=np.uint64))
        if not ok.any():
            return 0
        self._free(area, offs[ok], slots[ok])
        evicted = int(np.count_nonzero(ok))
        if count:
            self._c["evicts"] += evicted
        return evicted

    def _making_room(
        self,
        count: int,
        attempt: Callable[[list[int]], tuple[list[bool], list[int]]],
        evict: bool = True,
    ) -> list[bool]:
        """attempt(keys) -> (kept flags, keys refused as incompressible), for all keys, then,
        while keys are refused for the budget and ephemeral pages are left, evict a growing
        batch of those and attempt the refused keys again."""
        # A batch never evicts its own pages: those kept by its first attempt are newer.
        start = self._tick + 1
        ok, poor = attempt(list(range(count)))
        if not evict or not self._eph_areas or all(ok):
            return ok
        skip = set(poor)
        batch = 0
        compactions = 0
        while True:
            missing = [i for i, flag in enumerate(ok) if not flag and i not in skip]
            if not missing:
                return ok
            fragmented = self._alloc.fragmented_bytes()
            if batch and compactions < MAX_COMPACTIONS and fragmented >= 256 << 10:
                # Evicted pages left holes the refused ones do not fit: move objects out of
                # sparse slabs (bounded) before evicting more than they need.
                compactions += 1
                if not self.compact(COMPACT_STEP):
                    compactions = MAX_COMPACTIONS
            else:
                batch = max(EVICT_BATCH, len(missing)) if not batch else 2 * batch
                if not self.evict_ephemeral(batch, start):
                    return ok
            # The room is there now: the hysteresis is for pools that have nothing to give
            # back, not for this one.
            self._full = False
            again, poor_again = attempt(missing)
            skip.update(missing[j] for j in poor_again)
            # The first attempt counted these keys as refused for the budget; this one counts
            # them again as what they are now.
            self._c["failed_stores"] -= len(missing)
            self._c["reject_pool_limit"] -= len(missing)
            for i, flag in zip(missing, again, strict=True):
                ok[i] = flag
