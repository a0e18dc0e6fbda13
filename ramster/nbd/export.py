"""A block device over one frontswap area: byte ranges become pages, no sockets here.

Block `offset // page_size` is frontswap offset `offset // page_size` of the export's area.
Never-written pages read as zeros, written ones with no readable copy as EIO; a page written
as zeros, TRIM and WRITE_ZEROES invalidate; a partial write is a read-modify-write. Mutations
hold the pages they touch (`ranges.RangeLocks`; reads hold nothing): those of one page run in
the order they came, so a read-modify-write is never torn by another write, and mutations of
other pages run at once, each acknowledged once its own pages (and the manifest pages marking
them) are stored. Every connection sees one consistent device (NBD_FLAG_CAN_MULTI_CONN)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from ramster.errors import RamsterError
from ramster.frontswap.contract import Frontswap
from ramster.nbd import const, manifest, mutation
from ramster.nbd.config import ExportSpec
from ramster.nbd.handshake import ExportInfo
from ramster.nbd.manifest_store import ManifestStore, worth_logging
from ramster.nbd.mutation import TRIM, WRITE, ZERO, Mutation
from ramster.nbd.pagemap import PageMap
from ramster.nbd.ranges import EVERYTHING, RangeLocks, Ranges, pages_of
from ramster.nbd.statistics import ExportStatistics

log = logging.getLogger(__name__)

TRANSMISSION_FLAGS = (
    const.FLAG_HAS_FLAGS
    | const.FLAG_SEND_FLUSH
    | const.FLAG_SEND_FUA
    | const.FLAG_SEND_TRIM
    | const.FLAG_SEND_WRITE_ZEROES
    | const.FLAG_SEND_FAST_ZERO
    | const.FLAG_CAN_MULTI_CONN
)
"""Writes are stored before they are answered, so FUA and FLUSH hold by construction, and all
connections share one area and its range locks: what one connection flushed, every other one
reads."""

ReadResult = list[bytes] | int
"""The chunks of a READ's data, or its error."""

__all__ = [
    "HELD_PAGES",
    "OPEN_AREAS",
    "TRIM",
    "WRITE",
    "ZERO",
    "Export",
    "Mutation",
    "Opener",
    "ReadResult",
]

HELD_PAGES = 256
"""Pages an export keeps itself (1 MiB at 4 KiB) while no holder takes them; retried on writes."""


class Opener(Protocol):
    """How an export is made usable before it takes connections."""

    async def open(self, export: Export) -> None:
        """Make export usable (a replicated one hears its holders, claims a term, rebuilds)."""


class OpenAreas:
    """The Opener of an export that needs its areas only (a local one)."""

    async def open(self, export: Export) -> None:
        """Make the export's areas usable."""
        await export.open_areas()


OPEN_AREAS = OpenAreas()


class Export:
    """An NBD export over a frontswap area; every method reports errors as NBD error numbers."""

    def __init__(
        self,
        frontswap: Frontswap,
        spec: ExportSpec,
        max_payload: int,
        *,
        opener: Opener,
        area: int | None = None,
        manifest_area: int | None = None,
        fenced: Callable[[], str | None] | None = None,
    ) -> None:
        self.fs = frontswap
        self.spec = spec
        self.area = spec.area if area is None else area
        self.manifest_area = manifest_area
        """Where the written-blocks map is kept (replicated exports; see nbd.manifest)."""
        self._fenced_by = fenced
        self.fenced: str | None = None
        self.size = spec.size
        self.page_size = ps = frontswap.page_size
        if spec.size % ps:
            raise ValueError(f"export {spec.name}: size is not a multiple of {ps}-byte pages")
        self.info = ExportInfo(
            name=spec.name,
            size=spec.size,
            flags=TRANSMISSION_FLAGS,
            min_block=const.MIN_BLOCK,
            preferred_block=ps,
            max_block=max_payload,
            description=f"ramster frontswap area {spec.area}",
        )
        self._zero = bytes(ps)
        self._map = PageMap()
        self._held: dict[int, bytes] = {}
        self._ranges = RangeLocks()
        self._stored = 0
        self._zero_pages = 0
        self._rmw = 0
        self._refused = 0
        self._discarded = 0
        self._read_errors = 0
        self._load_failures = 0
        self._restore_failures = 0
        self._lost: PageMap | None = None
        self.manifest: ManifestStore | None = (
            None
            if manifest_area is None
            else ManifestStore(spec.name, manifest_area, self.fs.store_many)
        )
        """The manifest's pages to store, and in which slots (replicated exports)."""
        self._opener = opener

    async def open(self) -> None:
        """Make the export usable (before it takes connections), through its opener."""
        await self._opener.open(self)

    async def open_areas(self) -> None:
        """Make the export's areas usable."""
        await self.fs.init(self.area)
        if self.manifest_area is not None:
            await self.fs.init(self.manifest_area)

    def restore_index(
        self,
        written: Sequence[int] | np.ndarray,
        lost: np.ndarray,
        manifest_slots: dict[int, int] | None = None,
    ) -> None:
        """After a rebuild: the blocks written, those of them with no copy left, and the slot
        of each manifest page's state (`ManifestStore.stored_in`)."""
        self._map.add(np.asarray(written, dtype=np.int64))
        self._mark_lost(lost)
        if self.manifest is not None and manifest_slots:
            self.manifest.stored_in(manifest_slots)

    def _mark_lost(self, pages: Sequence[int] | np.ndarray) -> None:
        """Written pages with no copy left: they read as I/O errors until written again."""
        if len(pages):
            if self._lost is None:
                self._lost = PageMap()
            self._lost.add(np.asarray(pages, dtype=np.int64))

    def hold(self, pages: dict[int, bytes]) -> None:
        """Pages whose only good copies this server keeps: served, stored once there is room."""
        self._held.update(pages)

    def mark_manifest(self, numbers: Iterable[int]) -> None:
        """Manifest pages to store before the next write is answered."""
        if self.manifest is not None:
            self.manifest.mark(numbers)

    def fence(self, why: str) -> None:
        """Serve nothing more: another server took the export over."""
        if self.fenced is None:
            self.fenced = why
            log.error("nbd export %s: fenced, no longer served here: %s", self.spec.name, why)

    def _check_fenced(self) -> bool:
        if self.fenced is None and self._fenced_by is not None:
            why = self._fenced_by()
            if why is not None:
                self.fence(why)
        return self.fenced is not None

    # -- reads -----------------------------------------------------------------------------------

    async def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[ReadResult]:
        """The data of each (offset, length) range (already checked against the size)."""
        ps = self.page_size
        pages: list[int] = []
        spans: list[tuple[int, int]] = []
        for offset, length in ranges:
            first = offset // ps
            count = (offset + length - 1) // ps - first + 1 if length else 0
            spans.append((len(pages), count))
            pages.extend(range(first, first + count))
        contents = await self._load(pages)
        if contents is None:
            return [await self._read_alone(offset, length) for offset, length in ranges]
        out: list[ReadResult] = []
        for (offset, length), (start, count) in zip(ranges, spans, strict=True):
            out.append(self._slice(contents[start : start + count], offset, length))
        return out

    async def _read_alone(self, offset: int, length: int) -> ReadResult:
        """One range by itself, after a batch failed: only the ranges with bad pages fail."""
        ps = self.page_size
        first = offset // ps
        count = (offset + length - 1) // ps - first + 1 if length else 0
        contents = await self._load(list(range(first, first + count)))
        if contents is None:
            self._read_errors += 1
            return const.EIO
        return self._slice(contents, offset, length)

    async def _load(self, pages: list[int]) -> list[bytes] | None:
        """Page contents (zeros where nothing is stored); None if any page failed to load."""
        zero = self._zero
        out = [zero] * len(pages)
        if not pages:
            return out
        if self._check_fenced():
            return None
        where = self._map.present(pages)
        if not where:
            return out
        if self._lost is not None and self._lost.contains(pages).any():
            return None  # written, and no copy left anywhere: never zeros
        try:
            got = await self.fs.load_many(self.area, [pages[i] for i in where])
        except RamsterError as exc:
            self._load_failures += 1
            if worth_logging(self._load_failures):
                log.warning(
                    "nbd export %s: load of %d pages failed (%d times so far): %s",
                    self.spec.name,
                    len(where),
                    self._load_failures,
                    exc,
                )
            return None
        for i, page in zip(where, got, strict=True):
            if page is not None:
                out[i] = page
            elif pages[i] not in self._held:  # written, and no readable copy: never zeros
                self._load_failures += 1
                return None
        if self._held:
            for i, page_no in enumerate(pages):
                held = self._held.get(page_no)
                if held is not None:
                    out[i] = held
        return out

    def _slice(self, contents: list[bytes], offset: int, length: int) -> list[bytes]:
        """The requested bytes out of whole pages."""
        if not length:
            return []
        ps = self.page_size
        head = offset % ps
        tail = (offset + length) % ps
        if head or tail:
            if len(contents) == 1:
                return [contents[0][head : head + length]]
            contents = list(contents)
            contents[0] = contents[0][head:]
            if tail:
                contents[-1] = contents[-1][:tail]
        return contents

    # -- writes ----------------------------------------------------------------------------------

    async def write_many(self, writes: Sequence[tuple[int, bytes]]) -> list[int]:
        """Store each (offset, data) in order, as if one after another; an error per write."""
        return await self.mutate([(WRITE, offset, data) for offset, data in writes])

    async def mutate(self, ops: Sequence[Mutation]) -> list[int]:
        """Apply WRITE, ZERO and TRIM operations in order, as if one after another, in one
        load, one store and one invalidate of the pool; an error per operation."""
        ps = self.page_size
        # Held pages are retried under a barrier only: one store of each key at a time.
        barrier = bool(self._held)
        ranges: Ranges = (
            EVERYTHING
            if barrier
            else [
                pages_of(offset, len(arg) if isinstance(arg, bytes) else arg, ps)
                for _, offset, arg in ops
            ]
        )
        async with self._ranges.hold(ranges):
            return await self._mutate_locked(ops, retry_held=barrier)

    async def _old_pages(self, spans: list[mutation.Span]) -> tuple[dict[int, bytes], set[int]]:
        """Stored content of the pages written only in part (unless an earlier operation of the
        batch produces them), and the pages that failed to load."""
        old: dict[int, bytes] = {}
        bad: set[int] = set()
        wanted = mutation.partial_pages(spans, self.page_size)
        if wanted:
            loaded = await self._load(wanted)
            if loaded is not None:
                return dict(zip(wanted, loaded, strict=True)), bad
            for page in wanted:
                one = await self._load([page])
                if one is None:
                    bad.add(page)
                else:
                    old[page] = one[0]
        return old, bad

    async def _mutate_locked(self, ops: Sequence[Mutation], retry_held: bool = False) -> list[int]:
        if self._check_fenced():
            return [const.EIO] * len(ops)
        errors = await self._mutate_pages(ops, retry_held)
        if not await self.persist_manifest():
            errors = [e or const.EIO for e in errors]
        # One fenced answer anywhere in the batch fails all of it (the holders that kept a page
        # have not heard the new term yet, and prove nothing).
        return [const.EIO] * len(ops) if self._check_fenced() else errors

    def _note_changed(self, pages: Sequence[int]) -> None:
        """Blocks whose written-or-not changed: their manifest pages are to be stored."""
        if len(pages):
            self.mark_manifest(manifest.pages_of(pages))

    async def persist_manifest(self) -> bool:
        """Store the changed manifest pages; False if any could not be stored."""
        return self.manifest is None or await self.manifest.persist(self._map)

    async def _store_new(self, stores: list[int], contents: list[bytes]) -> list[bool]:
        """Store pages; blocks written for the first time are recorded in the manifest at the
        same time (both must hold before the writes are acknowledged)."""
        fresh = [stores[i] for i in self._missing(stores)]
        self._map.add(stores)  # before the store: the map stays a superset of the area
        if self.manifest_area is None or not fresh:
            return await self.fs.store_many(self.area, stores, contents)
        self._note_changed(fresh)
        data = asyncio.ensure_future(self.fs.store_many(self.area, stores, contents))
        meta = asyncio.ensure_future(self.persist_manifest())
        try:
            await asyncio.wait((data, meta))
        except BaseException:
            data.cancel()
            meta.cancel()
            await asyncio.gather(data, meta, return_exceptions=True)
            raise
        kept = data.result()
        if not meta.result():
            raise RamsterError("the manifest could not be stored")
        return kept

    def _missing(self, pages: list[int]) -> list[int]:
        """Indexes of the pages not marked as written."""
        present = set(self._map.present(pages))
        return [i for i in range(len(pages)) if i not in present]

    async def _mutate_pages(self, ops: Sequence[Mutation], retry_held: bool) -> list[int]:
        ps = self.page_size
        zero = self._zero
        if self._held and retry_held:  # only under a barrier: no other store of them is on
            await self._retry_held()
        spans = mutation.spans(ops, ps)
        aligned = mutation.aligned(spans, ps)
        old, bad = ({}, set()) if aligned else await self._old_pages(spans)
        final, skipped, merges = mutation.final_pages(spans, old, bad, aligned, ps)
        self._rmw += merges
        stores: list[int] = []
        contents: list[bytes] = []
        zeros: list[int] = []
        for page, content in final.items():
            if content == zero:
                zeros.append(page)
            else:
                stores.append(page)
                contents.append(content)
        failed: dict[int, int] = {}
        """Pages whose new content is not stored, with the error their operations get."""
        if stores:
            fresh = [stores[i] for i in self._missing(stores)]
            kept: list[bool] | None = None
            failure: RamsterError | None = None
            try:
                kept = await self._store_new(stores, contents)
            except RamsterError as exc:
                failure = exc
            if kept is None:
                log.error(
                    "nbd export %s: store of %d pages failed: %s",
                    self.spec.name,
                    len(stores),
                    failure,
                )
                failed.update(dict.fromkeys(stores, const.EIO))
                self._map.discard(fresh)  # never stored: zeros again, not an I/O error
                self._note_changed(fresh)
            else:
                refused = [p for p, ok in zip(stores, kept, strict=True) if not ok]
                self._stored += len(stores) - len(refused)
                if self._lost is not None:
                    self._lost.discard([p for p, ok in zip(stores, kept, strict=True) if ok])
                if refused and self._check_fenced():
                    failed.update(dict.fromkeys(stores, const.EIO))
                    refused = []  # nothing to put back: the export is no longer this node's
                if self._held:
                    for page, ok in zip(stores, kept, strict=True):
                        if ok:
                            self._held.pop(page, None)
                if refused:
                    self._refused += len(refused)
                    failed.update(dict.fromkeys(refused, const.ENOSPC))
                    await self._restore(refused, old, set(fresh))
        if zeros:
            self._zero_pages += len(zeros)
            mapped = [zeros[i] for i in self._map.present(zeros)]
            if mapped and await self._invalidate_logged(mapped):
                failed.update(dict.fromkeys(mapped, const.EIO))
        self._read_errors += len(skipped)
        return mutation.errors_of(spans, skipped, failed, ps)

    async def _restore(self, refused: list[int], old: dict[int, bytes], fresh: set[int]) -> None:
        """Put back the old content of refused pages that were only partly overwritten.

        A refused store drops the old copy (the contract's rule against stale data); for a
        sub-page write that would lose bytes the failed request never covered. What the pool
        will not take back either is held here (up to HELD_PAGES) until it does. A page whose
        old bytes are gone reads as an I/O error until it is written again, never as zeros
        (invariant 11); one that held zeros (never written, or trimmed) is zeros again."""
        zero = self._zero
        back = [p for p in refused if old.get(p, zero) != zero]
        gone = [p for p in refused if p in fresh or (p in old and old[p] == zero)]
        unreadable = [p for p in refused if p not in fresh and p not in old]
        if back:
            try:
                kept = await self.fs.store_many(self.area, back, [old[p] for p in back])
            except RamsterError:
                kept = [False] * len(back)
            lost = []
            for page, ok in zip(back, kept, strict=True):
                if ok:
                    self._held.pop(page, None)
                elif page in self._held or len(self._held) < HELD_PAGES:
                    self._held[page] = old[page]
                else:
                    lost.append(page)
            if lost:
                self._restore_failures += len(lost)
                log.error(
                    "nbd export %s: %d pages lost the bytes around a refused sub-page write "
                    "(first: page %d); they read as I/O errors until written again",
                    self.spec.name,
                    len(lost),
                    lost[0],
                )
                unreadable += lost
        for page in gone + unreadable:
            self._held.pop(page, None)
        self._map.discard(gone)
        self._note_changed(gone)
        # Still marked written (in the manifest too): a restart finds them without a copy.
        self._mark_lost(unreadable)

    async def _retry_held(self) -> None:
        """Offer held pages to the pool again; those it takes are no longer held."""
        pages = list(self._held)
        try:
            kept = await self.fs.store_many(self.area, pages, [self._held[p] for p in pages])
        except RamsterError:
            return
        for page, ok in zip(pages, kept, strict=True):
            if ok:
                del self._held[page]

    async def _invalidate(self, pages: Sequence[int]) -> None:
        """Forget pages, in slices so that other connections get their turn."""
        for i in range(0, len(pages), const.INVALIDATE_CHUNK):
            part = list(pages[i : i + const.INVALIDATE_CHUNK])
            await self.fs.invalidate_many(self.area, part)
            if self._held:
                for page in part:
                    self._held.pop(page, None)
            self._map.discard(part)
            if self._lost is not None:
                self._lost.discard(part)
            self._note_changed(part)
            self._discarded += len(part)
            if i + const.INVALIDATE_CHUNK < len(pages):
                await asyncio.sleep(0)

    # -- ranges ----------------------------------------------------------------------------------

    async def trim(self, offset: int, length: int) -> int:
        """Discard the whole pages inside the range (partial pages are left as they are)."""
        ps = self.page_size
        first = -(-offset // ps)
        end = (offset + length) // ps
        async with self._ranges.hold([pages_of(offset, length, ps)]):
            if self._check_fenced():
                return const.EIO
            error = await self._invalidate_range(first, end)
            error = error or (0 if await self.persist_manifest() else const.EIO)
            return const.EIO if self._check_fenced() else error

    async def write_zeroes(self, offset: int, length: int) -> int:
        """Make the range read as zeros: whole pages are invalidated, partial ones rewritten."""
        if not length:
            return 0
        ps = self.page_size
        end = offset + length
        first_full = -(-offset // ps)
        end_full = end // ps
        async with self._ranges.hold([pages_of(offset, length, ps)]):
            if self._check_fenced():
                return const.EIO
            edges: list[Mutation] = []
            if first_full > end_full:
                edges.append((ZERO, offset, length))
            else:
                if offset % ps:
                    edges.append((ZERO, offset, first_full * ps - offset))
                if end % ps:
                    edges.append((ZERO, end_full * ps, end - end_full * ps))
            # Edge pages never written already read as zeros.
            edges = [edges[i] for i in self._map.present([e[1] // ps for e in edges])]
            errors = await self._mutate_locked(edges) if edges else []
            error = next((e for e in errors if e), 0)
            if first_full < end_full:
                error = await self._invalidate_range(first_full, end_full) or error
            error = error or (0 if await self.persist_manifest() else const.EIO)
            return const.EIO if self._check_fenced() else error

    async def _invalidate_range(self, first: int, end: int) -> int:
        if end <= first:
            return 0
        return await self._invalidate_logged(self._map.in_range(first, end).tolist())

    async def _invalidate_logged(self, pages: Sequence[int]) -> int:
        """_invalidate, with a failure logged and turned into EIO."""
        try:
            await self._invalidate(pages)
        except RamsterError as exc:
            failure = exc
        else:
            return 0
        log.error("nbd export %s: invalidate failed: %s", self.spec.name, failure)
        return const.EIO

    async def flush(self) -> int:
        """Every write answered before is stored; this waits for writes still being stored."""
        async with self._ranges.hold(EVERYTHING):
            if self._check_fenced():
                return const.EIO
            return const.EIO if not await self.persist_manifest() or self._check_fenced() else 0

    def statistics(self) -> ExportStatistics:
        """A snapshot of the export's counters."""
        return ExportStatistics(
            name=self.spec.name,
            area=self.area,
            size=self.size,
            pages_mapped=len(self._map),
            pages_stored=self._stored,
            zero_pages=self._zero_pages,
            read_modify_writes=self._rmw,
            pages_refused=self._refused,
            pages_discarded=self._discarded,
            read_errors=self._read_errors,
            pages_held=len(self._held),
            restore_failures=self._restore_failures,
            durability=self.spec.durability,
            pages_lost=0 if self._lost is None else len(self._lost),
            fenced=self.fenced,
            manifest_failures=0 if self.manifest is None else self.manifest.failures,
        )
