"""The lent pool's exports: terms claimed on this holder, inventories for a rebuilding server,
deletions and silent exports' reclaim (part of `LentPool`, which holds the state)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ramster.pagestore.claims import ExportTerms
from ramster.pagestore.owners import (
    EXPORT_PREFIX,
    FORGETS_PER_PASS,
    INVENTORY_LIMIT,
    MAX_REMEMBERED,
    ExportClaim,
    Fenced,
    Reclaimed,
    export_incarnation,
    parse_export_incarnation,
)
from ramster.pagestore.pool import PagePool

log = logging.getLogger("ramster.pagestore.lent")


class ExportHolding:
    """What a holder does for exports (their owners are `export:NAME`, their incarnations
    `t<term>@<server>`)."""

    if TYPE_CHECKING:
        pool: PagePool
        terms: ExportTerms
        clock: Callable[[], float]
        _marked: dict[tuple[str, str], int]
        _export_seen: dict[str, float]
        _epochs: dict[str, int]
        _ids: dict[tuple[str, str, int], int]

        def note_owner(
            self,
            owner: str,
            incarnation: str,
            now: float | None = None,
            supersedes: str | None = None,
            *,
            told: bool = False,
        ) -> int: ...
        def forget(self, owner: str, keep: str | None = None) -> int: ...
        def pages_by_owner(self) -> dict[str, int]: ...
        def _floor(self, owner: str, keyed: str, area: int) -> int: ...
        def _sweep(self, key: tuple[str, str, int], ident: int, max_version: int) -> None: ...

    def _note_export(
        self, owner: str, incarnation: str, *, hello: bool = False, told: bool = False
    ) -> None:
        """Check an export call's term against the newest seen (Fenced if older), learn a
        newer one, and note that the export is alive."""
        term, node = parse_export_incarnation(incarnation)
        self.terms.check(owner, term, node, self._idle_exports)
        self._export_seen[owner] = self.clock()
        # Told on the server's data calls (its claims' answers carry no epoch: a keepalive
        # must not swallow the news), and forgotten once a put, a get or a drop told it:
        # their answers make the server repair around this holder (`told`); an order or a
        # holder's copy for it do not.
        if not hello and (owner, "") in self._marked:
            epoch = self._marked[(owner, "")]
            if told:
                del self._marked[(owner, "")]
            raise Reclaimed(f"the pages of {owner} were reclaimed here (epoch {epoch})")

    def claim(self, owner: str, term: int, node: str, size: int) -> tuple[bool, ExportClaim]:
        """Take (or keep alive) an export under `term`: refused for an older term or the same
        term from another node; term 0 only asks. The claim after the call either way."""
        known = self.terms.claims.get(owner)
        if term == 0:
            return True, known or self.terms.last_claim(owner)
        try:
            self._note_export(owner, export_incarnation(term, node), hello=True)
        except Fenced as exc:
            return False, exc.claim
        return True, self.terms.resize(owner, size)

    def _idle_exports(self) -> list[str]:
        """Exports with no pages here, longest silent first (their claims may make room)."""
        pages = self.pages_by_owner()
        idle = [o for o in self.terms.claims if not pages.get(o)]
        return sorted(idle, key=lambda o: self._export_seen.get(o, 0.0))

    def inventory(
        self, owner: str, incarnation: str, area: int, start: int, limit: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """(offsets, versions, checksums) of up to `limit` pages of an export's area from
        `start` on, ascending: what a restarted server rebuilds its index from."""
        # A rebuild builds a new index: a reclaim here is no news to it. Only a server whose
        # term stands hears it so (a stale one's call must not spend the live server's news).
        term, node = parse_export_incarnation(incarnation)
        self.terms.check(owner, term, node, self._idle_exports)
        self._marked.pop((owner, ""), None)
        self.note_owner(owner, incarnation)
        ident = self._ids.get((owner, "", area))
        if ident is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.astype(np.uint64), empty.astype(np.uint64)
        limit = min(limit, INVENTORY_LIMIT)
        floor = self._floor(owner, "", area)
        if floor < 0:
            return self.pool.held_meta(ident, start, limit)
        # Pages an area drop reached are gone, even before the sweep has freed them; a short
        # answer still means the end, so keep reading past them.
        parts = []
        while limit > 0:
            offs, versions, sums = self.pool.held_meta(ident, start, limit)
            live = versions > np.uint64(floor)
            parts.append((offs[live], versions[live], sums[live]))
            if len(offs) < limit:
                break
            limit -= int(live.sum())
            start = int(offs[-1]) + 1
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )

    def delete_export(self, owner: str, term: int, node: str) -> int:
        """Forget an export's pages for good: its term is kept (older servers stay fenced) and
        so is the deletion (a copy of an older term, however late, is never kept again).

        A deletion told late, once a newer life of the export claimed this holder, takes the
        deleted life's copies (and older) only, by their versions: the new life's stay, and
        its server stays unfenced (0 is returned; they go a step at a time)."""
        if 0 < term < self.terms.known_term(owner):
            self.terms.delete(owner, term)
            floor = self.terms.version_floor(owner)
            for key, ident in list(self._ids.items()):
                if key[0] == owner:
                    self._sweep(key, ident, floor)
            return 0
        self._note_export(owner, export_incarnation(term, node), hello=True)
        self.terms.delete(owner, term)
        dropped = self.forget(owner)
        self._export_seen.pop(owner, None)
        return dropped

    def reclaim_exports(self, grace: float) -> dict[str, int]:
        """Forget the pages of exports not heard from for `grace` seconds (0: never)."""
        if grace <= 0:
            return {}
        now = self.clock()
        dropped: dict[str, int] = {}
        for owner, seen in list(self._export_seen.items()):
            if len(dropped) == FORGETS_PER_PASS:
                break  # the rest at the next pass: a forget scans tables as big as their bounds
            if now - seen > grace:
                dropped[owner] = self.forget(owner)
                del self._export_seen[owner]
                epoch = self._epochs.pop(owner, 0) + 1
                self._epochs[owner] = epoch
                self._marked[(owner, "")] = epoch
                while len(self._epochs) > MAX_REMEMBERED:
                    self._epochs.pop(next(iter(self._epochs)))
                while len(self._marked) > MAX_REMEMBERED:
                    self._marked.pop(next(iter(self._marked)))
                log.warning(
                    "export %s silent for %.0f s (export grace %.0f s): reclaimed %d pages",
                    owner.removeprefix(EXPORT_PREFIX),
                    now - seen,
                    grace,
                    dropped[owner],
                )
        return dropped

    def exports(self) -> dict[str, tuple[ExportClaim, int]]:
        """Every export this holder knows: its claim and the pages held here."""
        pages = self.pages_by_owner()
        return {o: (c, pages.get(o, 0)) for o, c in self.terms.claims.items()}
