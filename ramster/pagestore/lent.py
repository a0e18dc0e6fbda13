"""The lent pool: other owners' pages kept in stored form, keyed by (owner, incarnation, area,
offset). Pure logic; the node serves it over the RPC."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramster.pagestore.config import MAX_AREA, PoolConfig
from ramster.pagestore.pool import PagePool, PoolStatistics
from ramster.types import Buffer

log = logging.getLogger(__name__)

Stored = tuple[int, int, Buffer]
"""(version, checksum, stored payload) of one held page, wherever it travels."""


def incarnation_order(incarnation: str) -> int:
    """The start time an incarnation id begins with (hex nanoseconds); 0 if it has none."""
    head = incarnation.split("-", 1)[0]
    try:
        return int(head, 16)
    except ValueError:
        return 0


class StaleIncarnation(Exception):
    """A request from an incarnation older than the one this holder knows for that owner."""


@dataclass(frozen=True, slots=True)
class LentStatistics:
    """What this node holds for others."""

    pool: PoolStatistics
    owners: int
    areas: int
    reclaimed_pages: int
    stale_requests: int


class LentPool:
    """Pages held for peers, within the lent budget; one internal area per (owner, inc, area)."""

    def __init__(self, config: PoolConfig) -> None:
        self.pool = PagePool(config)
        self._current: dict[str, str] = {}  # owner -> newest incarnation seen
        self._last_seen: dict[str, float] = {}  # owner -> when it last spoke (caller's clock)
        self._ids: dict[tuple[str, str, int], int] = {}
        self._free_ids: list[int] = []
        self._next_id = 0
        self._reclaimed = 0
        self._stale = 0
        self.draining = False
        """While draining, new pages are refused; owners move theirs elsewhere."""

    # -- owners and incarnations ---------------------------------------------------------------

    def note_owner(self, owner: str, incarnation: str, now: float | None = None) -> int:
        """Learn an owner's incarnation; pages of an older one are reclaimed (returns how many).

        Raises StaleIncarnation for an incarnation older than the newest seen. `now` (any
        monotonic clock) records that the owner is alive, for `reclaim_silent`.
        """
        known = self._current.get(owner)
        if known is not None and incarnation_order(incarnation) < incarnation_order(known):
            self._stale += 1
            raise StaleIncarnation(f"{owner} incarnation {incarnation} is older than {known}")
        if now is not None:
            self._last_seen[owner] = now
        if known == incarnation:
            return 0
        self._current[owner] = incarnation
        dropped = self.forget(owner, keep=incarnation)
        if known is not None:
            log.info(
                "owner %s restarted (incarnation %s -> %s): reclaimed %d pages",
                owner,
                known,
                incarnation,
                dropped,
            )
        return dropped

    def forget(self, owner: str, keep: str | None = None) -> int:
        """Drop every page of an owner (but those of incarnation `keep`); returns how many."""
        dropped = 0
        for key in [k for k in self._ids if k[0] == owner and k[1] != keep]:
            ident = self._ids.pop(key)
            dropped += self.pool.drop_area(ident)
            self._free_ids.append(ident)
        if keep is None:
            self._current.pop(owner, None)
            self._last_seen.pop(owner, None)
        self._reclaimed += dropped
        return dropped

    def reclaim_silent(self, now: float, grace: float) -> dict[str, int]:
        """Drop every page of owners not heard from for `grace` seconds; {owner: pages}."""
        dropped: dict[str, int] = {}
        for owner, seen in list(self._last_seen.items()):
            if now - seen > grace:
                dropped[owner] = self.forget(owner)
                log.warning(
                    "owner %s silent for %.0f s (grace %.0f s): reclaimed %d pages",
                    owner,
                    now - seen,
                    grace,
                    dropped[owner],
                )
        return dropped

    def _area_id(self, owner: str, inc: str, area: int, create: bool) -> int | None:
        key = (owner, inc, area)
        ident = self._ids.get(key)
        if ident is None and create:
            if self._free_ids:
                ident = self._free_ids.pop()
            elif self._next_id <= MAX_AREA:
                ident = self._next_id
                self._next_id += 1
            else:
                return None
            self._ids[key] = ident
        return ident

    # -- pages -----------------------------------------------------------------------------------

    def put(
        self,
        owner: str,
        inc: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        checksums: Sequence[int],
        payloads: Sequence[bytes | bytearray | memoryview],
    ) -> list[bool]:
        """Keep pages for an owner; False for each page refused (the lent budget is full)."""
        self.note_owner(owner, inc)
        ok = [False] * len(offsets)
        if self.draining:
            return ok
        for area, idx in _by_area(areas):
            ident = self._area_id(owner, inc, area, create=True)
            if ident is None:
                continue
            kept = self.pool.put_stored_many(
                ident,
                [offsets[i] for i in idx],
                [payloads[i] for i in idx],
                [versions[i] for i in idx],
                [checksums[i] for i in idx],
            )
            for i, flag in zip(idx, kept, strict=True):
                ok[i] = flag
        return ok

    def get(
        self, owner: str, inc: str, areas: Sequence[int], offsets: Sequence[int]
    ) -> list[Stored | None]:
        """Held pages in stored form, None where not held."""
        self.note_owner(owner, inc)
        out: list[Stored | None] = [None] * len(offsets)
        for area, idx in _by_area(areas):
            ident = self._area_id(owner, inc, area, create=False)
            if ident is None:
                continue
            for i, item in zip(
                idx, self.pool.get_stored_many(ident, [offsets[i] for i in idx]), strict=True
            ):
                out[i] = item
        return out

    def drop(
        self,
        owner: str,
        inc: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int] | None = None,
    ) -> list[bool]:
        """Forget pages; with versions, only copies no newer than the given version go."""
        self.note_owner(owner, inc)
        ok = [False] * len(offsets)
        for area, idx in _by_area(areas):
            ident = self._area_id(owner, inc, area, create=False)
            if ident is None:
                continue
            offs = [offsets[i] for i in idx]
            held = self.pool.versions(ident, offs)
            go = [
                j
                for j, (i, v) in enumerate(zip(idx, held, strict=True))
                if v is not None and (versions is None or v <= versions[i])
            ]
            self.pool.drop_many(ident, [offs[j] for j in go])
            for j in go:
                ok[idx[j]] = True
        return ok

    def drop_area(self, owner: str, inc: str, area: int) -> int:
        """Forget every page of one of an owner's areas."""
        self.note_owner(owner, inc)
        ident = self._ids.pop((owner, inc, area), None)
        if ident is None:
            return 0
        dropped = self.pool.drop_area(ident)
        self._free_ids.append(ident)
        return dropped

    def damage_for_test(self, owner: str, area: int, offset: int, stale: bool) -> None:
        """Corrupt (or make stale) the copy held for an owner's current incarnation."""
        ident = self._ids[(owner, self._current[owner], area)]
        if stale:
            self.pool.age_for_test(ident, offset)
        else:
            self.pool.corrupt_for_test(ident, offset)

    def free_bytes(self) -> int:
        """Room left in the lent budget, in bytes (0 while the pool refuses stores)."""
        if self.pool.full or self.draining:
            return 0
        return max(0, self.pool.config.budget_bytes - self.pool.used_bytes)

    def statistics(self) -> LentStatistics:
        """Lent pool counters."""
        return LentStatistics(
            pool=self.pool.statistics(),
            owners=len(self._current),
            areas=len(self._ids),
            reclaimed_pages=self._reclaimed,
            stale_requests=self._stale,
        )


def _by_area(areas: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Indices grouped by area, in first-seen order."""
    if len(areas) and all(a == areas[0] for a in areas):
        return [(areas[0], list(range(len(areas))))]
    arr = np.asarray(areas)
    return [(int(a), np.flatnonzero(arr == a).tolist()) for a in dict.fromkeys(areas)]
