"""The lent pool: other owners' pages kept in stored form, keyed by (owner, incarnation, area,
offset); pure logic, served over the RPC. Who owners are, and how exports' terms fence a stale
server: owners.py. Whatever order puts and drops arrive in, newest wins (`put`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ramster.errors import InvalidPage
from ramster.pagestore.claims import CallMarks, CopyOrders, ExportTerms, newest_wins
from ramster.pagestore.config import MAX_AREA, PoolConfig
from ramster.pagestore.lent_exports import ExportHolding
from ramster.pagestore.lent_reclaim import Reclaiming
from ramster.pagestore.owners import (
    MAX_FLOORS,
    MAX_OWNERS,
    RECLAIM_STEP_PAGES,
    AreaSweep,
    ExportClaim,
    Fenced,
    LentStatistics,
    LiveTwin,
    Reclaimed,
    StaleIncarnation,
    TooManyOwners,
    by_area,
    incarnation_order,
    is_export,
    keyed_incarnation,
    parse_export_incarnation,
)
from ramster.pagestore.pool import PagePool
from ramster.types import Buffer

log = logging.getLogger(__name__)

Stored = tuple[int, int, Buffer]
"""(version, checksum, stored payload) of one held page, wherever it travels."""


class PageColumns(Protocol):
    """A batch of pages as parallel columns, as it came off the wire (`ramster.rpc.PageBatch`)."""

    @property
    def areas(self) -> Sequence[int]: ...
    @property
    def offsets(self) -> Sequence[int]: ...
    @property
    def versions(self) -> Sequence[int]: ...
    @property
    def checksums(self) -> Sequence[int]: ...
    @property
    def payloads(self) -> Sequence[Buffer]: ...


class LentPool(ExportHolding, Reclaiming):
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
        self.terms = ExportTerms()
        self.orders = CopyOrders()
        self.marks = CallMarks()
        self._export_seen: dict[str, float] = {}
        self._unordered = 0
        self._newer_held = 0
        # (owner, keyed incarnation, area) -> the version an area drop reached: pages no newer
        # are gone (or being swept: invisible meanwhile), and late copies of them are refused.
        self._floors: dict[tuple[str, str, int], int] = {}
        # Area drops still freeing their pages, a leaf at a time, newest first; one per area (a
        # drop of an area already being swept raises its floor and starts its walk again).
        self._sweeps: dict[tuple[str, str, int], AreaSweep] = {}
        self._kind_at: dict[int, int] = {}  # area id -> newest version a put set its kind with
        self.step_pages = RECLAIM_STEP_PAGES
        """Pages one reclaim step frees (about): the most work an area drop or a forgotten
        owner costs one pass of the event loop."""

    @property
    def refused_for_order(self) -> int:
        """Pages refused so far for order, not for room: a newer version of their key is held
        here, or they were copies nobody ordered."""
        return self._newer_held + self._unordered

    # -- owners and incarnations ---------------------------------------------------------------

    def note_owner(
        self,
        owner: str,
        incarnation: str,
        now: float | None = None,
        supersedes: str | None = None,
        *,
        told: bool = False,
    ) -> int:
        """Learn an owner's incarnation; pages of an older one are reclaimed (returns how many).

        `now` (any monotonic clock) means the owner said hello: it is alive, and any reclaim
        of its pages is now told (its epoch rose). Raises StaleIncarnation for an incarnation
        older than the newest seen, LiveTwin for a newer one while the older is still heard
        from, Reclaimed for a data call of an incarnation whose pages were reclaimed.
        """
        if is_export(owner):
            self._note_export(owner, incarnation, hello=now is not None, told=told)
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
        if known is None:
            self._make_room_for_owner()
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

    def _make_room_for_owner(self) -> None:
        """Forget the longest-silent owner without pages here when the table is full;
        TooManyOwners when every known owner has pages."""
        if len(self._current) < MAX_OWNERS:
            return
        holding = {o for (o, _, _) in self._ids}
        idle = [o for o in self._current if o not in holding]
        if not idle:
            raise TooManyOwners(f"this holder keeps pages of {MAX_OWNERS} owners already")
        gone = min(idle, key=lambda o: self._last_seen.get(o, 0.0))
        del self._current[gone]
        self._last_seen.pop(gone, None)

    def _check_copy(self, owner: str, incarnation: str) -> None:
        """A copy forwarded for an owner names its current identity exactly: only the owner's
        own calls create, advance or revive it (StaleIncarnation or Fenced otherwise)."""
        if is_export(owner):
            term, node = parse_export_incarnation(incarnation)
            claim = self.terms.claims.get(owner)
            if claim is None or (claim.term, claim.node) != (term, node):
                self.terms.fenced += 1
                raise Fenced(owner, claim or ExportClaim(0, "", 0))
            if (owner, "") in self._marked:
                raise Reclaimed(f"the pages of {owner} were reclaimed here")
            return
        if self._current.get(owner) != incarnation:
            self._stale += 1
            raise StaleIncarnation(
                f"a copy for {owner} incarnation {incarnation}: this holder knows "
                f"{self._current.get(owner) or 'no incarnation'} of it (only the owner advances it)"
            )
        if (owner, incarnation) in self._marked:
            raise Reclaimed(f"the pages of {owner} incarnation {incarnation} were reclaimed here")

    def expect(
        self,
        owner: str,
        inc: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        checksums: Sequence[int],
        seq: int | None = None,
    ) -> None:
        """The owner's order of copies another holder will forward here (hold.expect), sent as
        its call `seq` (if it says): a copy that lands counts as a put of that call."""
        self.note_owner(owner, inc)
        if seq is not None:
            # An order sent before a drop of its key that ran here first orders a stray: none.
            allowed = [True] * len(offsets)
            for area, idx in by_area(areas):
                fine = self.marks.put(
                    owner, inc, area, [offsets[i] for i in idx], [versions[i] for i in idx], seq
                )
                for i, ok in zip(idx, fine, strict=True):
                    allowed[i] = ok
            if not all(allowed):
                keep = [i for i, ok in enumerate(allowed) if ok]
                areas, offsets = [areas[i] for i in keep], [offsets[i] for i in keep]
                versions, checksums = [versions[i] for i in keep], [checksums[i] for i in keep]
                if not keep:
                    return
        self.orders.expect(
            owner, keyed_incarnation(owner, inc), areas, offsets, versions, checksums, seq
        )

    def _floor(self, owner: str, keyed: str, area: int) -> int:
        """Versions at or below this are gone from the area (an area drop, a deletion); -1."""
        area_floor = self._floors.get((owner, keyed, area), -1)
        return max(area_floor, self.terms.version_floor(owner)) if keyed == "" else area_floor

    def owner_incarnations(self) -> dict[str, str]:
        """{owner: the newest incarnation this holder knows of it} (a copy)."""
        return dict(self._current)

    def epoch(self, owner: str) -> int:
        """How many times this holder reclaimed the owner's pages (0: never)."""
        return self._epochs.get(owner, 0)

    def _area_id(self, owner: str, inc: str, area: int, create: bool) -> int | None:
        key = (owner, keyed_incarnation(owner, inc), area)
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
            self._kind_at.pop(ident, None)  # a reused id starts a new life
        return ident

    # -- pages -----------------------------------------------------------------------------------

    def put(
        self,
        owner: str,
        inc: str,
        batch: PageColumns,
        ephemeral: bool = False,
        *,
        copy: bool = False,
        seq: int | None = None,
    ) -> list[bool]:
        """Keep pages for an owner; False for each page refused (the lent budget is full, or a
        newer version of the key is held here: a late copy never replaces a newer one).

        Ephemeral pages (of an owner's ephemeral area) are kept only in room no persistent
        page needs: they are evicted, coldest first, when a persistent copy needs it.
        A copy (`copy=True`: forwarded by another holder) must name the owner's current
        incarnation or term exactly; only the owner's own calls create or advance them.
        The owner's own put may say which of its calls it is (`seq`): a drop of a key the owner
        sent after it, at this version or above, that ran here first refuses it (`CallMarks`).
        InvalidPage, before anything changes, for an empty batch, a payload that is empty or
        over a page, or a key given twice: a peer's batch is checked whole before any of it
        is kept.
        """
        areas, offsets, versions = batch.areas, batch.offsets, batch.versions
        checksums, payloads = batch.checksums, batch.payloads
        if not offsets:
            raise InvalidPage("an empty page batch")
        groups = by_area(areas)
        ps = self.pool.config.page_size
        if not 0 < min(map(len, payloads)) <= max(map(len, payloads)) <= ps:
            raise InvalidPage(f"a stored payload is 1 to {ps} bytes long")
        for _, idx in groups:
            if len({offsets[i] for i in idx}) != len(idx):
                raise InvalidPage("a page batch names a key twice")
        keyed = keyed_incarnation(owner, inc)
        if copy:
            self._check_copy(owner, inc)
            # Only copies the owner itself ordered here, exactly so (hold.expect).
            ordered = self.orders.take(owner, keyed, areas, offsets, versions, checksums)
            self._unordered += ordered.count(False)
            groups = [(a, [i for i in idx if ordered[i]]) for a, idx in groups]
        else:
            self.note_owner(owner, inc, told=True)
            # The owner's own newer store: an older copy it ordered here is a stray now.
            self.orders.withdraw(owner, keyed, areas, offsets, versions, inclusive=False)
            if seq is not None:
                groups = [
                    (a, self._not_overtaken(owner, inc, a, idx, offsets, versions, seq))
                    for a, idx in groups
                ]
        ok = [False] * len(offsets)
        if self.draining:
            return ok
        for area, idx in groups:
            ident = self._area_id(owner, inc, area, create=True) if idx else None
            if ident is None:
                continue
            floor = self._floor(owner, keyed, area)
            take, refused = newest_wins(
                self.pool, ident, floor, idx, offsets, versions, checksums, ok
            )
            self._newer_held += refused
            if not take:
                continue
            if not self._kind_of_put(ident, ephemeral and not copy, copy, take, versions):
                self._newer_held += len(take)
                continue
            kept = self.pool.put_stored_many(
                ident,
                [offsets[i] for i in take],
                [payloads[i] for i in take],
                [versions[i] for i in take],
                [checksums[i] for i in take],
            )
            for i, flag in zip(take, kept, strict=True):
                ok[i] = flag
        if seq is not None and not copy:
            for area, idx in groups:
                held = [offsets[i] for i in idx if ok[i]]
                if held:
                    self.marks.kept(owner, inc, area, held, seq)
        elif copy and self.orders.taken:
            taken = self.orders.taken
            for area, idx in groups:
                for i in idx:
                    order_seq = taken.get((area, offsets[i]))
                    if ok[i] and order_seq is not None:
                        self.marks.kept(owner, inc, area, [offsets[i]], order_seq)
        return ok

    def _kind_of_put(
        self, ident: int, ephemeral: bool, copy: bool, take: list[int], versions: Sequence[int]
    ) -> bool:
        """Take the owner's word for the area's kind (ephemeral or not) from a put of its own,
        unless the area holds pages a newer put of the other kind stored: then this put is
        from the area's earlier life (the owner initialised it again since), late, and is
        refused (False). A copy never changes the kind (a new area from a copy is persistent)."""
        held = self.pool.area_pages(ident)
        if copy and held:
            return True
        newest = max(versions[i] for i in take)
        if (
            held
            and self.pool.is_ephemeral(ident) != ephemeral
            and newest <= self._kind_at.get(ident, -1)
        ):
            return False
        self.pool.set_ephemeral(ident, ephemeral)
        self._kind_at[ident] = max(newest, self._kind_at.get(ident, -1))
        return True

    def _not_overtaken(
        self,
        owner: str,
        inc: str,
        area: int,
        idx: list[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        seq: int,
    ) -> list[int]:
        """The pages of a put (call `seq`) that no drop sent after it reached."""
        fine = self.marks.put(
            owner, inc, area, [offsets[i] for i in idx], [versions[i] for i in idx], seq
        )
        self._newer_held += fine.count(False)
        return [i for i, keep in zip(idx, fine, strict=True) if keep]

    def get(
        self,
        owner: str,
        inc: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        *,
        told: bool = True,
    ) -> list[Stored | None]:
        """Held pages in stored form, None where not held. `told`: the answer reaches the
        owner itself (not a holder copying for it), so a reclaim it raises is news told."""
        self.note_owner(owner, inc, told=told)
        out: list[Stored | None] = [None] * len(offsets)
        keyed = keyed_incarnation(owner, inc)
        for area, idx in by_area(areas):
            ident = self._area_id(owner, inc, area, create=False)
            if ident is None:
                continue
            floor = self._floor(owner, keyed, area)
            for i, item in zip(
                idx, self.pool.get_stored_many(ident, [offsets[i] for i in idx]), strict=True
            ):
                if item is not None and item[0] > floor:
                    out[i] = item
        return out

    def drop(
        self,
        owner: str,
        inc: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int] | None = None,
        seq: int | None = None,
    ) -> list[bool]:
        """Forget pages; with versions, only copies no newer than the given version go. With
        `seq` (the owner's call sequence, `CallMarks`): a put the owner sent before this drop
        and that runs here after it keeps none of these versions either, and a copy that a put
        sent after this drop kept here stays."""
        self.note_owner(owner, inc, told=True)
        may = [True] * len(offsets)
        if versions is not None:
            keyed = keyed_incarnation(owner, inc)
            self.orders.withdraw(owner, keyed, areas, offsets, versions, inclusive=True)
            if seq is not None:
                for area, idx in by_area(areas):
                    fine = self.marks.dropped(
                        owner,
                        inc,
                        area,
                        [offsets[i] for i in idx],
                        [versions[i] for i in idx],
                        seq,
                    )
                    for i, flag in zip(idx, fine, strict=True):
                        may[i] = flag
        ok = [False] * len(offsets)
        for area, idx in by_area(areas):
            ident = self._area_id(owner, inc, area, create=False)
            if ident is None:
                continue
            offs = [offsets[i] for i in idx]
            held = self.pool.versions(ident, offs)
            go = [
                j
                for j, (i, v) in enumerate(zip(idx, held, strict=True))
                if v is not None and (versions is None or v <= versions[i]) and may[i]
            ]
            self.pool.drop_many(ident, [offs[j] for j in go])
            for j in go:
                ok[idx[j]] = True
        return ok

    def drop_area(self, owner: str, inc: str, area: int, max_version: int | None = None) -> int:
        """Forget the pages of one of an owner's areas (only those no newer than max_version,
        when given: a late area drop must not take pages stored after it was sent); returns
        how many pages the area held.

        The pages go at once (none is read, listed or replaced by an older copy again) and are
        freed by `reclaim_step`, a bounded step at a time: an area of millions of pages would
        otherwise stall the holder past its peers' patience.
        """
        self.note_owner(owner, inc)
        key = (owner, keyed_incarnation(owner, inc), area)
        ident = self._ids.get(key)
        if max_version is None:
            if ident is None:
                return 0
            del self._ids[key]
            self._doomed.append(ident)
            pages = self.pool.area_pages(ident)
            self.reclaim_step()  # a small area goes at once, a large one a step at a time
            return pages
        if self._floors.get(key, -1) < max_version:
            self._floors.pop(key, None)
            self._floors[key] = max_version  # newest last: the oldest goes first when full
            while len(self._floors) > MAX_FLOORS:
                self._floors.pop(next(iter(self._floors)))
        if ident is None:
            return 0
        self._sweep(key, ident, max_version)
        pages = self.pool.area_pages(ident)
        self.reclaim_step()
        return pages

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
            exports=len(self.terms.claims),
            fenced_requests=self.terms.fenced,
            newer_held=self._newer_held,
            unordered_copies=self._unordered,
        )
