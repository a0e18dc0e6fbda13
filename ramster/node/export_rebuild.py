"""Rebuilding a replicated export's index from its holders, once its server has claimed a term
and heard every node that may hold copies (see `node.exports`).

The manifest first, then the data, newest version wins (`frontswap.remote.rebuild.merge`). A
blank manifest is written only for an export known to be new; otherwise a manifest page no
holder has makes its whole range unknown (blocks there with no copy read as I/O errors). Copies
this node holds itself are rehomed: each is verified (version and checksum of its bytes) before
it is stored elsewhere, and only what was stored elsewhere is dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ramster.cluster.peers import Peers
from ramster.errors import ExportTaken, RamsterError
from ramster.frontswap.remote import RemoteTier
from ramster.frontswap.remote.rebuild import Inventory, Rebuilt, merge
from ramster.nbd import manifest
from ramster.nbd.export import HELD_PAGES, Export
from ramster.pagestore.codec import checksum, expand
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import INVENTORY_LIMIT, Fenced

log = logging.getLogger(__name__)

DATA_AREA, MANIFEST_AREA = 0, 1
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


@contextlib.contextmanager
def _taken_meanwhile() -> Iterator[None]:
    """This node's own lent pool refusing the term being rebuilt: another server took a newer
    one meanwhile (a move). An ExportTaken, as a holder's refusal would be, never a crash."""
    try:
        yield
    except Fenced as exc:
        raise ExportTaken(str(exc)) from None


@dataclass(slots=True)
class Heard:
    """What a rebuild found: every node's inventories and whether any copy exists."""

    meta: dict[str, Inventory] = field(default_factory=dict)
    data: dict[str, Inventory] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    """Nodes asked whose inventory did not come."""

    @property
    def empty(self) -> bool:
        """No copy of anything on any node heard."""
        return not any(len(inv[0]) for inv in (*self.meta.values(), *self.data.values()))

    def drop_older(self, floor: int) -> None:
        """Forget the copies at or below version `floor` (a deleted life of the export)."""
        if floor < 0:
            return
        for part in (self.meta, self.data):
            for node, (offs, vers, sums) in list(part.items()):
                live = vers > np.uint64(floor)
                part[node] = (offs[live], vers[live], sums[live])

    def holding(self) -> frozenset[str]:
        """The nodes that reported any copy."""
        return frozenset(
            n for part in (self.meta, self.data) for n, inv in part.items() if len(inv[0])
        )


@dataclass(slots=True)
class Rebuilder:
    """Rebuilds one served export (its frontswap, export and identity) on this node."""

    peers: Peers
    lent: LentPool
    page_size: int
    name: str
    size: int
    tier: RemoteTier
    owner: str
    incarnation: str
    rehome_lost: list[int] = field(default_factory=list)
    uncertain: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Blocks the last rebuild found uncertain (`newer_than_manifest`): I/O errors."""
    kept_here: dict[int, dict[int, bytes]] = field(default_factory=dict)
    """area -> {key: page}: good copies held here that rehome could store nowhere else."""
    uncertain_copies: dict[str, tuple[I64, U64]] = field(default_factory=dict)
    """Their copies, to drop once their manifest pages mark them (`settle_uncertain`)."""
    manifest_slots: dict[int, int] = field(default_factory=dict)
    """page -> the slot of its newest state (`ManifestStore.stored_in`)."""

    async def inventories(self, nodes: list[str]) -> Heard:
        """Both areas' inventories of every node named (and this node's own lent pool)."""
        heard = Heard()
        for area, into in ((MANIFEST_AREA, heard.meta), (DATA_AREA, heard.data)):
            results = await asyncio.gather(
                *(self._one(n, area) for n in nodes), return_exceptions=True
            )
            own = self._own(area)
            if len(own[0]):
                into[self.peers.me] = own
            for node, result in zip(nodes, results, strict=True):
                if isinstance(result, tuple):
                    into[node] = result
                elif isinstance(result, RamsterError):
                    log.error("export %s: no inventory from %s: %s", self.name, node, result)
                    heard.failed.add(node)
                elif isinstance(result, BaseException):
                    raise result
        return heard

    async def _one(self, node: str, area: int) -> Inventory:
        """A holder's whole inventory of one area, page by page (a short answer is the end)."""
        parts: list[Inventory] = []
        start = 0
        identity = (self.owner, self.incarnation)
        while True:
            part = await self.peers.calls.inventory(node, identity, area, start, INVENTORY_LIMIT)
            start = _next(parts, part)
            if start < 0:
                return _joined(parts)

    def _own(self, area: int) -> Inventory:
        """This node's own lent pool's whole inventory of one area, paged exactly as a
        holder's is: `LentPool.inventory` caps every answer at INVENTORY_LIMIT keys too."""
        parts: list[Inventory] = []
        start = 0
        while True:
            with _taken_meanwhile():
                part = self.lent.inventory(
                    self.owner, self.incarnation, area, start, INVENTORY_LIMIT
                )
            start = _next(parts, part)
            if start < 0:
                return _joined(parts)

    async def rebuild(self, heard: Heard, new: bool) -> tuple[Rebuilt, I64, I64, list[int]]:
        """(data index, blocks written, blocks lost, manifest pages still to store) from what
        was heard; `new` only for an export known never to have been created."""
        tier, fs, me = self.tier, self.tier.frontswap, self.peers.me
        # Each page's newest slot is its state; copies of the other slot go (an older state,
        # which only outlived a failed update). Kept, a rehome's new versions could put it
        # above the newest (they follow no order between slots).
        meta, older = _newest_slot_only(merge(heard.meta))
        tier.adopt(MANIFEST_AREA, [g for g in meta.groups if me not in g[0]])
        self._drop_stale(MANIFEST_AREA, meta)
        unplaced = await self.rehome(MANIFEST_AREA, [g for g in meta.groups if me in g[0]])
        # After the rehome (copy before drop), but a page whose newest copy only this node has
        # (not stored elsewhere: kept here, or unreadable) keeps its older one here too.
        alone = [*unplaced, *self.kept_here.get(MANIFEST_AREA, {})]
        kept = {k % manifest.SLOT_STRIDE for k in alone}
        self._drop_copies(MANIFEST_AREA, _without_pages(older, me, kept))
        meta, keys = _newest_slots(meta)
        numbers = [int(n) for g in meta.groups for n in g[1]]
        self.manifest_slots = {
            n: int(k) // manifest.SLOT_STRIDE for n, k in zip(numbers, keys, strict=True)
        }
        written: list[np.ndarray] = []
        unreadable: list[int] = []
        for i in range(0, len(numbers), 256):
            chunk, chunk_keys = numbers[i : i + 256], [int(k) for k in keys[i : i + 256]]
            try:
                pages = await fs.load_many(MANIFEST_AREA, chunk_keys)
            except RamsterError as exc:
                log.error("export %s: manifest pages unreadable: %s", self.name, exc)  # noqa: TRY400
                pages = [None] * len(chunk)
            own = self.kept_here.get(MANIFEST_AREA, {})
            for number, key, loaded in zip(chunk, chunk_keys, pages, strict=True):
                page = loaded if loaded is not None else own.get(key)
                if page is None:
                    unreadable.append(number)
                else:
                    written.append(manifest.decode(number, page))
        pages_total = self.size // self.page_size
        total = max(1, -(-pages_total // manifest.SPAN))
        unstored: list[int] = []
        if new:
            if not heard.empty:
                raise RamsterError(f"export {self.name}: copies exist; it is not new")
            unstored = await self.new_manifest(total)
        else:
            # Every manifest page exists from the export's first start: one missing lost its
            # copies everywhere, and its range is as unknown as an unreadable one's.
            unreadable += sorted(set(range(total)) - set(numbers))
        # Pages read from here alone (no holder had room for them) are stored again when it can.
        unstored += sorted(
            {k % manifest.SLOT_STRIDE for k in self.kept_here.get(MANIFEST_AREA, {})}
        )
        wanted = np.concatenate(written) if written else np.zeros(0, dtype=np.int64)
        if unreadable:
            # Which blocks those pages marked is unknown: every copy found in their ranges is
            # kept, and every other block there reads as an I/O error (never as zeros).
            log.error(
                "export %s: %d manifest pages have no good copy: blocks in their ranges that no "
                "holder has read as I/O errors",
                self.name,
                len(unreadable),
            )
            spans = [
                np.arange(n << manifest.PAGE_BITS, min((n + 1) << manifest.PAGE_BITS, pages_total))
                for n in unreadable
            ]
            wanted = np.union1d(wanted, np.concatenate(spans))
        uncertain = newer_than_manifest(merge(heard.data), meta, wanted)
        if len(uncertain):
            log.error(
                "export %s: %d blocks have a copy newer than the manifest page that covers them "
                "(an update of that page was lost): they read as I/O errors until written again",
                self.name,
                len(uncertain),
            )
        # Their copies are in no index: they go once their pages mark them (settle_uncertain).
        data = merge(heard.data, wanted)
        self.uncertain, self.uncertain_copies = uncertain, _take_keys(data, uncertain)
        wanted = np.union1d(wanted, uncertain)
        tier.adopt(DATA_AREA, [g for g in data.groups if me not in g[0]])
        self._drop_stale(DATA_AREA, data)
        gone = await self.rehome(DATA_AREA, [g for g in data.groups if me in g[0]])
        lost = np.union1d(data.lost, np.asarray(gone, dtype=np.int64))
        lost = np.union1d(lost, uncertain).astype(np.int64)
        return data, wanted, lost, unstored

    async def new_manifest(self, total: int) -> list[int]:
        """Store every manifest page of a new export (all clear: pages of one repeated byte
        cost a few bytes each), so that a missing one later means lost, not never written;
        the numbers of those not stored yet."""
        blank = bytes(self.page_size)
        unstored: list[int] = []
        for i in range(0, total, 1024):
            numbers = list(range(i, min(i + 1024, total)))
            kept = await self.tier.frontswap.store_many(
                MANIFEST_AREA, numbers, [blank] * len(numbers)
            )
            unstored += [n for n, ok in zip(numbers, kept, strict=True) if not ok]
        return unstored

    async def settle_uncertain(self, export: Export) -> None:
        """Make the uncertain blocks errors that last: store their manifest pages marking them
        written, then drop their copies (marked with no copy reads as an I/O error, and a later
        write of one is newer than its page). In that order: a crash between the two leaves a
        block served as its copy, never as zeros; a page not stored keeps the copies."""
        if not len(self.uncertain):
            return
        export.mark_manifest(sorted(manifest.pages_of(self.uncertain.tolist())))
        if await export.persist_manifest():
            self._drop_copies(DATA_AREA, self.uncertain_copies)
        self.uncertain_copies = {}

    def _drop_stale(self, area: int, rebuilt: Rebuilt) -> None:
        self._drop_copies(area, rebuilt.stale)

    def _drop_copies(self, area: int, stale: dict[str, tuple[I64, U64]]) -> None:
        for node, (offs, vers) in stale.items():
            if node != self.peers.me:
                self.tier.queue_drops(node, area, offs.tolist(), [int(v) for v in vers])
        own = stale.get(self.peers.me)
        if own is not None and len(own[0]):
            with _taken_meanwhile():
                self.lent.drop(
                    self.owner,
                    self.incarnation,
                    [area] * len(own[0]),
                    own[0].tolist(),
                    own[1].tolist(),
                )

    async def rehome(self, area: int, groups: list[Any]) -> list[int]:
        """Copies this node holds of the export it now serves (a server never holds its own
        pages): each copy whose bytes match the version and checksum the rebuild chose is
        stored again (R copies elsewhere, a newer version); only those stored are dropped
        here, and the other holders' older copies of them are queued to be dropped. A key
        whose copy here is bad or could not be stored is served from the other holders of
        its newest version if there are any; the keys left with none (returned) read as
        I/O errors, and this node keeps its copy (a later server may rehome it)."""
        me, ps = self.peers.me, self.page_size
        unavailable: list[int] = []
        for nodes, offs, vers, sums in groups:
            others = tuple(n for n in nodes if n != me)
            for i in range(0, len(offs), 1024):
                part = [int(o) for o in offs[i : i + 1024]]
                want_v = [int(v) for v in vers[i : i + 1024]]
                want_s = [int(s) for s in sums[i : i + 1024]]
                with _taken_meanwhile():
                    held = self.lent.get(self.owner, self.incarnation, [area] * len(part), part)
                keys: list[int] = []
                pages: list[bytes] = []
                bad: list[int] = []
                for j, h in enumerate(held):
                    page = expand(h[2], ps) if h is not None else b""
                    if (
                        h is None
                        or int(h[0]) != want_v[j]
                        or len(page) != ps
                        or checksum(page) != want_s[j]
                    ):
                        bad.append(j)
                    else:
                        keys.append(j)
                        pages.append(page)
                if bad:
                    log.error(
                        "export %s: %d copies held here do not match their version or checksum: "
                        "not stored again",
                        self.name,
                        len(bad),
                    )
                # The copies stored again are newer than the ones they replace, whatever the
                # term: a drop of the old version can never take a new copy.
                self.tier.start_versions_at(max(want_v))
                kept = (
                    await self.tier.frontswap.store_many(area, [part[j] for j in keys], pages)
                    if keys
                    else []
                )
                stored = [j for j, ok in zip(keys, kept, strict=True) if ok]
                missed = bad + [j for j, ok in zip(keys, kept, strict=True) if not ok]
                if len(stored) < len(keys):
                    log.error(
                        "export %s: %d blocks held here could not be stored elsewhere: kept here",
                        self.name,
                        len(keys) - len(stored),
                    )
                if stored:
                    with _taken_meanwhile():
                        self.lent.drop(
                            self.owner,
                            self.incarnation,
                            [area] * len(stored),
                            [part[j] for j in stored],
                            [want_v[j] for j in stored],
                        )
                    for node in others:
                        self.tier.queue_drops(
                            node, area, [part[j] for j in stored], [want_v[j] for j in stored]
                        )
                if missed and others:
                    # The other holders of the newest version serve it (verified on load).
                    missed.sort()
                    self.tier.adopt(
                        area,
                        [
                            (
                                others,
                                np.asarray([part[j] for j in missed], dtype=np.int64),
                                np.asarray([want_v[j] for j in missed], dtype=np.uint64),
                                np.asarray([want_s[j] for j in missed], dtype=np.uint64),
                            )
                        ],
                    )
                elif missed:
                    # Good copies held here alone, no room elsewhere: served from here (the
                    # server keeps them, a bounded number, and stores them once there is room).
                    good = dict(zip(keys, pages, strict=True))
                    here = self.kept_here.setdefault(area, {})
                    for j in missed:
                        if j in good and len(here) < HELD_PAGES:
                            here[part[j]] = good[j]
                        else:
                            unavailable.append(part[j])
        return unavailable


def _next(parts: list[Inventory], part: Inventory) -> int:
    """Add one inventory answer: the offset to ask from next, or -1 once an answer was short
    (the end; INVENTORY_LIMIT keys is a full answer, whatever the holder's own cap)."""
    parts.append(part)
    offs = part[0]
    return -1 if len(offs) < INVENTORY_LIMIT else int(offs[-1]) + 1


def _joined(parts: list[Inventory]) -> Inventory:
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _newest_slot_only(meta: Rebuilt) -> tuple[Rebuilt, dict[str, tuple[I64, U64]]]:
    """The manifest's groups with only each page's newest slot, and the copies of the other
    slot by holder (to drop)."""
    if not meta.groups:
        return meta, {}
    keys = np.concatenate([g[1] for g in meta.groups]).astype(np.int64)
    versions = np.concatenate([g[2] for g in meta.groups]).astype(np.uint64)
    _, chosen, _ = manifest.newest_slots(keys, versions)
    kept: list[tuple[tuple[str, ...], I64, U64, U64]] = []
    older: dict[str, tuple[I64, U64]] = {}
    for holders, offs, vers, sums in meta.groups:
        mine = np.isin(offs, chosen)
        if mine.any():
            kept.append((holders, offs[mine], vers[mine], sums[mine]))
        for node in holders:
            was = older.get(node, (np.zeros(0, np.int64), np.zeros(0, np.uint64)))
            older[node] = (
                np.concatenate([was[0], offs[~mine]]).astype(np.int64),
                np.concatenate([was[1], vers[~mine]]).astype(np.uint64),
            )
    return Rebuilt(kept, meta.stale, meta.lost), older


def _without_pages(
    copies: dict[str, tuple[I64, U64]], node: str, pages: set[int]
) -> dict[str, tuple[I64, U64]]:
    """The copies, but node's of the manifest pages named (either slot)."""
    if node not in copies or not pages:
        return copies
    offs, vers = copies[node]
    keep = ~np.isin(offs % manifest.SLOT_STRIDE, np.asarray(sorted(pages), dtype=np.int64))
    return {**copies, node: (offs[keep], vers[keep])}


def _newest_slots(meta: Rebuilt) -> tuple[Rebuilt, I64]:
    """The manifest as pages: one group (its holders do not matter here) of each page's
    number and newest version, sorted by page; and the key of that newest copy."""
    if not meta.groups:
        return Rebuilt(), np.zeros(0, dtype=np.int64)
    keys = np.concatenate([g[1] for g in meta.groups]).astype(np.int64)
    versions = np.concatenate([g[2] for g in meta.groups]).astype(np.uint64)
    sums = np.concatenate([g[3] for g in meta.groups]).astype(np.uint64)
    numbers, chosen, at = manifest.newest_slots(keys, versions)
    return Rebuilt([((), numbers, versions[at], sums[at])]), chosen


def newer_than_manifest(data: Rebuilt, meta: Rebuilt, marked: I64) -> I64:
    """Blocks the manifest does not mark written whose newest copy is newer than the chosen
    version of the manifest page that covers them. A write stores its block, then the page
    marking it (an overwrite of a marked block changes no page); a trim or a zeroing stores
    the page, then drops the block. So that page's update marking the block was lost (or
    the write failed before it), and whether the block holds the copy, zeros or older bytes
    is unknown: an I/O error, never a guess (unknown is not empty). Blocks of pages not
    heard at all are left to the caller."""
    if not data.groups or not meta.groups:
        return np.zeros(0, dtype=np.int64)
    known = np.concatenate([g[1] for g in meta.groups]).astype(np.int64)
    known_v = np.concatenate([g[2] for g in meta.groups]).astype(np.uint64)
    order = np.argsort(known)
    known, known_v = known[order], known_v[order]
    keys = np.concatenate([g[1] for g in data.groups]).astype(np.int64)
    versions = np.concatenate([g[2] for g in data.groups]).astype(np.uint64)
    pages = keys >> manifest.PAGE_BITS
    at = np.minimum(np.searchsorted(known, pages), len(known) - 1)
    heard = known[at] == pages
    page_v = known_v[at]
    unmarked = ~np.isin(keys, marked)
    out: I64 = np.sort(keys[heard & unmarked & (versions > page_v)])
    return out


def _take_keys(rebuilt: Rebuilt, keys: I64) -> dict[str, tuple[I64, U64]]:
    """Take the copies of these keys out of the rebuild's stale copies (dropped elsewhere)."""
    out: dict[str, tuple[I64, U64]] = {}
    if not len(keys):
        return out
    for node, (offs, vers) in list(rebuilt.stale.items()):
        mine = np.isin(offs, keys)
        if mine.any():
            out[node] = (offs[mine], vers[mine])
            rebuilt.stale[node] = (offs[~mine], vers[~mine])
    return out
