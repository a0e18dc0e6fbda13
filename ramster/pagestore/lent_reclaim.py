"""The lent pool's reclaim: forgotten owners and dropped areas freed a bounded step at a time,
and silent owners forgotten (part of `LentPool`, which holds the state)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ramster.pagestore.claims import CallMarks, CopyOrders
from ramster.pagestore.owners import FORGETS_PER_PASS, MAX_REMEMBERED, AreaSweep
from ramster.pagestore.pool import PagePool

log = logging.getLogger("ramster.pagestore.lent")


class Reclaiming:
    """Freeing what a holder no longer keeps, without stalling its loop."""

    if TYPE_CHECKING:
        pool: PagePool
        orders: CopyOrders
        marks: CallMarks
        step_pages: int
        _ids: dict[tuple[str, str, int], int]
        _doomed: list[int]
        _free_ids: list[int]
        _floors: dict[tuple[str, str, int], int]
        _sweeps: dict[tuple[str, str, int], AreaSweep]
        _current: dict[str, str]
        _last_seen: dict[str, float]
        _epochs: dict[str, int]
        _marked: dict[tuple[str, str], int]
        _reclaimed: int

    def forget(self, owner: str, keep: str | None = None) -> int:
        """Forget every page of an owner (but those of incarnation `keep`); returns how many.

        The pages are unreachable at once and freed by `reclaim_step`, a bounded step at a
        time (the reclaim loop's): a large owner, or many owners forgotten in one pass, would
        stall the loop.
        """
        dropped = 0
        for key in [k for k in self._ids if k[0] == owner and k[1] != keep]:
            ident = self._ids.pop(key)
            dropped += self.pool.area_pages(ident)
            self._doomed.append(ident)
        for key in [k for k in self._floors if k[0] == owner and k[1] != keep]:
            del self._floors[key]
        if keep is None:
            self.orders.forget(owner)
            self.marks.forget(owner)
        if keep is None:
            self._current.pop(owner, None)
            self._last_seen.pop(owner, None)
        self._reclaimed += dropped
        return dropped

    def reclaim_step(self, max_pages: int | None = None) -> int:
        """Free up to about max_pages (default: step_pages) pages of forgotten owners or
        dropped areas; pages freed."""
        if max_pages is None:
            max_pages = self.step_pages
        freed = 0
        while self._doomed and freed < max_pages:
            ident = self._doomed[-1]
            offs = self.pool.area_offsets(ident, limit=max_pages - freed)
            if not len(offs):
                self._doomed.pop()
                self._free_ids.append(ident)
                continue
            freed += self.pool.drop_many(ident, offs)
        while self._sweeps and freed < max_pages:
            sweep = next(reversed(self._sweeps.values()))
            if not sweep.leaves or self._ids.get(sweep.key) != sweep.ident:
                del self._sweeps[sweep.key]  # done, or its owner forgotten (the id may be reused)
                continue
            offs = self.pool.leaf_offsets(sweep.ident, sweep.leaves.pop())
            held = self.pool.versions(sweep.ident, offs)
            old = [
                o
                for o, v in zip(offs.tolist(), held, strict=True)
                if v is not None and v <= sweep.floor
            ]
            freed += self.pool.drop_many(sweep.ident, old) + 1  # + 1: an empty leaf is work too
        return freed

    def reclaim_pending(self) -> bool:
        """Pages of forgotten owners or dropped areas are still to be freed."""
        return bool(self._doomed or self._sweeps)

    def reclaim_silent(self, now: float, grace: float) -> dict[str, int]:
        """Forget the pages of owners not heard from for `grace` seconds; {owner: pages}.

        The owner is told when it says hello again: its epoch here rises, and data calls of
        that incarnation are refused (Reclaimed) until then.
        """
        dropped: dict[str, int] = {}
        for owner, seen in list(self._last_seen.items()):
            if len(dropped) == FORGETS_PER_PASS:
                break  # the rest at the next pass: a forget scans tables as big as their bounds
            if now - seen > grace:
                incarnation = self._current.get(owner)
                dropped[owner] = self.forget(owner)
                epoch = self._epochs.pop(owner, 0) + 1
                self._epochs[owner] = epoch
                if incarnation is not None:
                    self._marked[(owner, incarnation)] = epoch
                while len(self._epochs) > MAX_REMEMBERED:
                    self._epochs.pop(next(iter(self._epochs)))
                while len(self._marked) > MAX_REMEMBERED:
                    self._marked.pop(next(iter(self._marked)))
                log.warning(
                    "owner %s silent for %.0f s (grace %.0f s): reclaimed %d pages",
                    owner,
                    now - seen,
                    grace,
                    dropped[owner],
                )
        return dropped

    def _sweep(self, key: tuple[str, str, int], ident: int, max_version: int) -> None:
        """Free the area's pages no newer than max_version, a leaf per reclaim step."""
        old = self._sweeps.pop(key, None)
        floor = max_version if old is None or old.ident != ident else max(old.floor, max_version)
        self._sweeps[key] = AreaSweep(key, ident, floor, self.pool.area_leaves(ident)[::-1])
