"""The lent pool: other owners' pages kept in stored form, keyed by (owner, incarnation, area,
offset). Pure logic; the node serves it over the RPC.

Two kinds of owner: a node (its pages die with its incarnation: a newer one reclaims them) and
an export (`export:NAME`, see EXPORT_PREFIX): its pages outlive the process that serves it and
belong to the export, guarded by a term. The incarnation an export's calls carry is
`t<term>@<node>`; a holder refuses (Fenced) any call with an older term than it has seen, or
the same term from another node, so that a stale server can never change a newer one's pages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ramster.errors import InvalidPage
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


EXPORT_PREFIX = "export:"
"""Owners named so are exports, not nodes."""
MAX_EXPORTS = 1024
"""Exports one holder keeps pages or terms for: bounded against a flood of made-up names."""
INVENTORY_LIMIT = 65536
"""Keys one inventory answer carries at most (about 1.3 MiB on the wire)."""


def is_export(owner: str) -> bool:
    """Is this owner an export (whose pages outlive the process serving it)?"""
    return owner.startswith(EXPORT_PREFIX)


def export_incarnation(term: int, node: str) -> str:
    """What an export's server puts where a node puts its incarnation."""
    return f"t{term}@{node}"


def parse_export_incarnation(incarnation: str) -> tuple[int, str]:
    """(term, serving node) of an export incarnation; ValueError if it is none."""
    head, sep, node = incarnation.partition("@")
    if not sep or not node or not head.startswith("t") or not head[1:].isdigit():
        raise ValueError(f"not an export incarnation (t<term>@<node>): {incarnation!r}")
    return int(head[1:]), node


@dataclass(frozen=True, slots=True)
class ExportClaim:
    """What a holder knows of an export: the newest term and its server, the size."""

    term: int
    node: str
    size: int


class Fenced(Exception):
    """A call for an export from an older term (or the same term from another server) than
    this holder has seen: the caller no longer serves that export."""

    def __init__(self, owner: str, claim: ExportClaim) -> None:
        super().__init__(
            f"{owner} is served under term {claim.term} by {claim.node}: older terms are fenced"
        )
        self.claim = claim


class TooManyExports(Exception):
    """This holder keeps MAX_EXPORTS exports already."""


class StaleIncarnation(Exception):
    """A request from an incarnation older than the one this holder knows for that owner."""


class LiveTwin(Exception):
    """A newer incarnation of an owner spoke while the older one is still heard from: two
    processes run under one node id. The older one keeps its pages; the newer is refused."""


class Reclaimed(Exception):
    """This owner incarnation's pages were reclaimed (it was silent past the owner grace), and
    it has not said hello since: it must learn that its copies here are gone."""


MAX_REMEMBERED = 4096
"""Owners whose reclaims a holder remembers (epochs and markers): bounded against a flood."""
RECLAIM_STEP_PAGES = 4096
"""Pages a forgotten owner's reclaim frees per step: each step is a short pause of the loop."""


@dataclass(frozen=True, slots=True)
class LentStatistics:
    """What this node holds for others."""

    pool: PoolStatistics
    owners: int
    areas: int
    reclaimed_pages: int
    stale_requests: int
    twins_refused: int
    reclaim_pending_pages: int
    """Pages of forgotten owners not yet freed (freed a step at a time)."""
    exports: int = 0
    fenced_requests: int = 0
    """Export calls refused for an older term (a stale server fenced)."""


class LentPool:
    """Pages held for peers, within the lent budget; one internal area per (owner, inc, area)."""

    def __init__(self, config: PoolConfig, twin_window: float = 0.0) -> None:
        self.pool = PagePool(config)
        self.twin_window = twin_window
        """Seconds within which an owner counts as alive when a newer incarnation of it
        speaks (its dead_after); 0 accepts every newer incarnation at once."""
        self._epochs: dict[str, int] = {}  # owner -> reclaims of its pages, ever
        self._marked: dict[tuple[str, str], int] = {}  # reclaimed and not told yet
        self._doomed: list[int] = []  # area ids of forgotten owners, freed step by step
        self._twins = 0
        self._current: dict[str, str] = {}  # owner -> newest incarnation seen
        self._last_seen: dict[str, float] = {}  # owner -> when it last spoke (caller's clock)
        self._ids: dict[tuple[str, str, int], int] = {}
        self._free_ids: list[int] = []
        self._next_id = 0
        self._reclaimed = 0
        self._stale = 0
        self.draining = False
        """While draining, new pages are refused; owners move theirs elsewhere."""
        self.clock: Callable[[], float] = time.monotonic
        """When export calls were last heard (exports say no hello: every call counts)."""
        self._claims: dict[str, ExportClaim] = {}
        self._export_seen: dict[str, float] = {}
        self._fenced = 0

    # -- owners and incarnations ---------------------------------------------------------------

    def note_owner(
        self,
        owner: str,
        incarnation: str,
        now: float | None = None,
        supersedes: str | None = None,
    ) -> int:
        """Learn an owner's incarnation; pages of an older one are reclaimed (returns how many).

        `now` (any monotonic clock) means the owner said hello: it is alive, and any reclaim
        of its pages is now told (its epoch rose). Raises StaleIncarnation for an incarnation
        older than the newest seen, LiveTwin for a newer one while the older is still heard
        from, Reclaimed for a data call of an incarnation whose pages were reclaimed.
        """
        if is_export(owner):
            self._note_export(owner, incarnation, hello=now is not None)
            return 0
        known = self._current.get(owner)
        if known is not None and known != incarnation:
            if incarnation_order(incarnation) < incarnation_order(known):
                self._stale += 1
                raise StaleIncarnation(f"{owner} incarnation {incarnation} is older than {known}")
            seen = self._last_seen.get(owner)
            restart = supersedes is not None and supersedes == known
            if (
                not restart
                and now is not None
                and seen is not None
                and now - seen < self.twin_window
            ):
                self._twins += 1
                raise LiveTwin(
                    f"node id {owner} is in use by a live process (incarnation {known}, heard "
                    f"{now - seen:.1f} s ago); incarnation {incarnation} is refused"
                )
        if (owner, incarnation) in self._marked:
            if now is None:
                raise Reclaimed(
                    f"the pages of {owner} incarnation {incarnation} were reclaimed here "
                    f"(epoch {self._marked[(owner, incarnation)]})"
                )
            del self._marked[(owner, incarnation)]
        if now is not None:
            self._last_seen[owner] = now
        if known == incarnation:
            return 0
        self._current[owner] = incarnation
        dropped = self.forget(owner, keep=incarnation)
        if known is not None:
            log.info(
                "owner %s restarted (incarnation %s -> %s): reclaiming %d pages",
                owner,
                known,
                incarnation,
                dropped,
            )
        return dropped

    def _note_export(self, owner: str, incarnation: str, *, hello: bool = False) -> None:
        """Check an export call's term against the newest seen (Fenced if older), learn a
        newer one, and note that the export is alive."""
        term, node = parse_export_incarnation(incarnation)
        claim = self._claims.get(owner)
        if claim is not None and (term < claim.term or (term == claim.term and node != claim.node)):
            self._fenced += 1
            raise Fenced(owner, claim)
        if claim is None or term > claim.term:
            if claim is None and len(self._claims) >= MAX_EXPORTS:
                raise TooManyExports(f"this holder keeps {MAX_EXPORTS} exports already")
            self._claims[owner] = ExportClaim(term, node, claim.size if claim else 0)
        if (owner, "") in self._marked:
            if not hello:
                raise Reclaimed(
                    f"the pages of {owner} were reclaimed here (epoch {self._marked[(owner, '')]})"
                )
            del self._marked[(owner, "")]
        self._export_seen[owner] = self.clock()

    def claim(self, owner: str, term: int, node: str, size: int) -> tuple[bool, ExportClaim]:
        """Take (or keep alive) an export under `term`: refused for an older term or the same
        term from another node; term 0 only asks. The claim after the call either way."""
        known = self._claims.get(owner)
        if term == 0:
            return True, known or ExportClaim(0, "", 0)
        try:
            self._note_export(owner, export_incarnation(term, node), hello=True)
        except Fenced as exc:
            return False, exc.claim
        current = self._claims[owner]
        if size and current.size != size:
            current = self._claims[owner] = ExportClaim(current.term, current.node, size)
        return True, current

    def inventory(
        self, owner: str, incarnation: str, area: int, start: int, limit: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """(offsets, versions, checksums) of up to `limit` pages of an export's area from
        `start` on, ascending: what a restarted server rebuilds its index from."""
        self.note_owner(owner, incarnation)
        ident = self._ids.get((owner, "", area))
        if ident is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.astype(np.uint64), empty.astype(np.uint64)
        return self.pool.held_meta(ident, start, min(limit, INVENTORY_LIMIT))

    def delete_export(self, owner: str, term: int, node: str) -> int:
        """Forget an export's pages for good (its term is kept: older servers stay fenced)."""
        self._note_export(owner, export_incarnation(term, node), hello=True)
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
            if now - seen > grace:
                dropped[owner] = self.forget(owner)
                del self._export_seen[owner]
                epoch = self._epochs.pop(owner, 0) + 1
                self._epochs[owner] = epoch
                self._marked[(owner, "")] = epoch
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
        return {o: (c, pages.get(o, 0)) for o, c in self._claims.items()}

    def epoch(self, owner: str) -> int:
        """How many times this holder reclaimed the owner's pages (0: never)."""
        return self._epochs.get(owner, 0)

    def forget(self, owner: str, keep: str | None = None) -> int:
        """Forget every page of an owner (but those of incarnation `keep`); returns how many.

        The pages are unreachable at once; the first RECLAIM_STEP_PAGES are freed now, the
        rest by `reclaim_step`, a bounded step at a time (a large owner would stall the loop).
        """
        dropped = 0
        for key in [k for k in self._ids if k[0] == owner and k[1] != keep]:
            ident = self._ids.pop(key)
            dropped += self.pool.area_pages(ident)
            self._doomed.append(ident)
        if keep is None:
            self._current.pop(owner, None)
            self._last_seen.pop(owner, None)
        self._reclaimed += dropped
        self.reclaim_step()
        return dropped

    def reclaim_step(self, max_pages: int = RECLAIM_STEP_PAGES) -> int:
        """Free up to about max_pages pages of forgotten owners; pages freed."""
        freed = 0
        while self._doomed and freed < max_pages:
            ident = self._doomed[-1]
            offs = self.pool.area_offsets(ident, limit=max_pages - freed)
            if not len(offs):
                self._doomed.pop()
                self._free_ids.append(ident)
                continue
            freed += self.pool.drop_many(ident, offs)
        return freed

    def reclaim_pending(self) -> bool:
        """Pages of forgotten owners are still to be freed."""
        return bool(self._doomed)

    def reclaim_silent(self, now: float, grace: float) -> dict[str, int]:
        """Forget the pages of owners not heard from for `grace` seconds; {owner: pages}.

        The owner is told when it says hello again: its epoch here rises, and data calls of
        that incarnation are refused (Reclaimed) until then.
        """
        dropped: dict[str, int] = {}
        for owner, seen in list(self._last_seen.items()):
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

    def _area_id(self, owner: str, inc: str, area: int, create: bool) -> int | None:
        key = (owner, _keyed(owner, inc), area)
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
        ephemeral: bool = False,
    ) -> list[bool]:
        """Keep pages for an owner; False for each page refused (the lent budget is full).

        Ephemeral pages (of an owner's ephemeral area) are kept only in room no persistent
        page needs: they are evicted, coldest first, when a persistent copy needs it.
        InvalidPage, before anything changes, for a payload that is empty or over a page or
        a key given twice: a peer's batch is checked whole before any of it is kept.
        """
        groups = _by_area(areas)
        ps = self.pool.config.page_size
        if payloads and not 0 < min(map(len, payloads)) <= max(map(len, payloads)) <= ps:
            raise InvalidPage(f"a stored payload is 1 to {ps} bytes long")
        for _, idx in groups:
            if len({offsets[i] for i in idx}) != len(idx):
                raise InvalidPage("a page batch names a key twice")
        self.note_owner(owner, inc)
        ok = [False] * len(offsets)
        if self.draining:
            return ok
        for area, idx in groups:
            ident = self._area_id(owner, inc, area, create=True)
            if ident is None:
                continue
            # The owner's word for the area's kind, on every put: an area id is reused.
            self.pool.set_ephemeral(ident, ephemeral)
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

    def drop_area(self, owner: str, inc: str, area: int, max_version: int | None = None) -> int:
        """Forget the pages of one of an owner's areas (only those no newer than max_version,
        when given: a late area drop must not take pages stored after it was sent)."""
        self.note_owner(owner, inc)
        inc = _keyed(owner, inc)
        ident = self._ids.get((owner, inc, area))
        if ident is None:
            return 0
        if max_version is not None:
            offs = self.pool.area_offsets(ident)
            held = self.pool.versions(ident, offs)
            old = [
                o
                for o, v in zip(offs.tolist(), held, strict=True)
                if v is not None and v <= max_version
            ]
            if len(old) < len(offs):
                return self.pool.drop_many(ident, old)
        del self._ids[(owner, inc, area)]
        dropped = self.pool.drop_area(ident)
        self._free_ids.append(ident)
        return dropped

    def damage_for_test(self, owner: str, area: int, offset: int, stale: bool) -> None:
        """Corrupt (or make stale) the copy held for an owner's current incarnation."""
        inc = "" if is_export(owner) else self._current[owner]
        ident = self._ids[(owner, inc, area)]
        if stale:
            self.pool.age_for_test(ident, offset)
        else:
            self.pool.corrupt_for_test(ident, offset)

    def pages_by_owner(self) -> dict[str, int]:
        """Pages held per owner (all its incarnations), from kept counts."""
        out: dict[str, int] = {}
        for (owner, _, _), ident in self._ids.items():
            out[owner] = out.get(owner, 0) + self.pool.area_pages(ident)
        return out

    def free_bytes(self) -> int:
        """Room left in the lent budget, in bytes (0 while the pool refuses stores): ephemeral
        pages count as room, since any persistent copy may have theirs."""
        pool = self.pool
        evictable = pool.ephemeral_bytes
        if (pool.full and not evictable) or self.draining:
            return 0
        return max(0, pool.config.budget_bytes - pool.used_bytes + evictable)

    def statistics(self) -> LentStatistics:
        """Lent pool counters."""
        return LentStatistics(
            pool=self.pool.statistics(),
            owners=len(self._current),
            areas=len(self._ids),
            reclaimed_pages=self._reclaimed,
            stale_requests=self._stale,
            twins_refused=self._twins,
            reclaim_pending_pages=sum(self.pool.area_pages(i) for i in self._doomed),
            exports=len(self._claims),
            fenced_requests=self._fenced,
        )


def _keyed(owner: str, incarnation: str) -> str:
    """The incarnation part of a page's key: an export's pages outlive its terms."""
    return "" if is_export(owner) else incarnation


def _by_area(areas: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Indices grouped by area, in first-seen order."""
    if len(areas) and areas.count(areas[0]) == len(areas):
        return [(areas[0], list(range(len(areas))))]
    arr = np.asarray(areas)
    return [(int(a), np.flatnonzero(arr == a).tolist()) for a in dict.fromkeys(areas)]
