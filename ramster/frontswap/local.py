"""The frontswap contract: validation, areas and versions over the stores that keep the pages
(the local pool alone by default; `frontswap.remote` builds the cluster's chain)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ramster.errors import InvalidPage
from ramster.frontswap.contract import AreaKind, PageLike
from ramster.frontswap.store import (
    AreaStore,
    Incoming,
    PoolStore,
    RawPages,
    StoredPages,
    Stores,
    Versions,
)
from ramster.pagestore import (
    MAX_OFFSET,
    PagePool,
    PoolConfig,
    PoolStatistics,
    checksum,
    encode,
)
from ramster.pagestore.core import SMALL_BATCH
from ramster.types import Buffer

log = logging.getLogger(__name__)

THREAD_BATCH = 512
"""Store batches above this many pages are compressed on worker threads."""
THREAD_CHUNK = 1024
"""Pages one worker thread compresses at a time."""
DEFAULT_MAX_AREAS = 32
"""Like the kernel's MAX_SWAPFILES: areas are few and numbered from 0."""
AREA_KINDS: tuple[AreaKind, ...] = ("persistent", "ephemeral")
CLEANCACHE_COUNTERS = ("puts", "succ_gets", "failed_gets", "invalidates")
"""Ephemeral areas' counters, named as cleancache's (evicts is the pool's)."""


async def encode_in_threads(
    pages: Sequence[bytes | bytearray], config: PoolConfig
) -> tuple[list[bytes | memoryview], list[int]]:
    """Stored forms and checksums of pages, computed on worker threads, in order."""

    def encode_chunk(chunk: Sequence[bytes | bytearray]) -> tuple[list[bytes], list[int]]:
        return [encode(p, config) for p in chunk], [checksum(p) for p in chunk]

    parts = await asyncio.gather(
        *(
            asyncio.to_thread(encode_chunk, pages[i : i + THREAD_CHUNK])
            for i in range(0, len(pages), THREAD_CHUNK)
        )
    )
    payloads: list[bytes | memoryview] = []
    sums: list[int] = []
    for chunk_payloads, chunk_sums in parts:
        payloads += chunk_payloads
        sums += chunk_sums
    return payloads, sums


def _distinct(offs: npt.NDArray[np.int64]) -> bool:
    if len(offs) <= SMALL_BATCH:
        return len(set(offs.tolist())) == len(offs)
    return len(np.unique(offs)) == len(offs)


@dataclass(frozen=True, slots=True)
class FrontswapStatistics:
    """Contract-level counters on top of the pool's."""

    pool: PoolStatistics
    areas: tuple[int, ...]
    reject_no_area: int
    versions_issued: int
    ephemeral_areas: tuple[int, ...] = ()
    cleancache: dict[str, int] | None = None
    """puts (pages offered), succ_gets (hits), failed_gets (misses), invalidates (pages) of
    ephemeral areas, and evicts (pages dropped for room, here and by the spiller)."""


class LocalFrontswap:
    """frontswap over its stores: validation, areas and the owner's version counter.

    Without stores it keeps pages in its pool alone; the cluster hands it a chain
    (`frontswap.remote.RemoteTier`) that records in the same pool.
    """

    def __init__(
        self,
        config: PoolConfig | None = None,
        max_areas: int = DEFAULT_MAX_AREAS,
        *,
        pool: PagePool | None = None,
        stores: Stores | None = None,
        versions: Versions | None = None,
    ) -> None:
        if not 1 <= max_areas <= 65536:
            raise ValueError(f"max_areas must be within 1..65536, got {max_areas!r}")
        self.pool = pool or PagePool(config)
        self.max_areas = max_areas
        local = PoolStore(self.pool)
        self.stores = stores or Stores(local, local)
        self.versions = versions or Versions()
        self._areas: set[int] = set()
        self._generation: dict[int, int] = {}
        """area -> how many times it was invalidated: a store that awaited across an
        invalidate_area must not record its pages in the area's next life."""
        self._reject_no_area = 0
        self._ephemeral: set[int] = set()
        self._cc: dict[str, int] = dict.fromkeys(CLEANCACHE_COUNTERS, 0)

    def _store(self, area: int) -> AreaStore:
        ephemeral = self.stores.ephemeral
        return (
            ephemeral
            if ephemeral is not None and area in self._ephemeral
            else self.stores.persistent
        )

    @property
    def page_size(self) -> int:
        """Bytes per page."""
        return self.pool.config.page_size

    # -- validation: everything is checked before anything changes ------------------------------

    def _area(self, area: object) -> int:
        if not isinstance(area, int) or isinstance(area, bool):
            raise TypeError(f"area must be an int, got {type(area).__name__}")
        if not 0 <= area < self.max_areas:
            raise InvalidPage(f"area {area} out of range 0..{self.max_areas - 1}")
        return area

    def _offsets(self, offsets: object) -> npt.NDArray[np.int64]:
        if (
            type(offsets) is list
            and len(offsets) <= SMALL_BATCH
            and all(type(o) is int and 0 <= o <= MAX_OFFSET for o in offsets)
        ):
            # The common case, checked without numpy's fixed cost; anything else (bools, numpy
            # ints, bad values) takes the general path below and its error messages.
            return np.array(offsets, dtype=np.int64)
        if isinstance(offsets, (str, bytes, bytearray)) or not isinstance(
            offsets, (Sequence, np.ndarray)
        ):
            raise TypeError(f"offsets must be a sequence of ints, got {type(offsets).__name__}")
        try:
            arr = np.asarray(offsets)
        except (OverflowError, ValueError):
            arr = np.asarray(offsets, dtype=object)
        if arr.ndim != 1:
            raise TypeError("offsets must be a flat sequence of ints")
        if len(arr) and arr.dtype.kind not in "iu":
            bad = next(
                (o for o in arr.tolist() if not isinstance(o, int) or isinstance(o, bool)), None
            )
            if bad is not None:
                raise TypeError(f"offset must be an int, got {type(bad).__name__}")
            # Python ints too large for int64: report the first one out of range.
            big = next(o for o in arr.tolist() if not 0 <= o <= MAX_OFFSET)
            raise InvalidPage(f"offset {big} out of range 0..{MAX_OFFSET}")
        if len(arr) and (int(arr.min()) < 0 or int(arr.max()) > MAX_OFFSET):
            bad_off = next(o for o in arr.tolist() if not 0 <= o <= MAX_OFFSET)
            raise InvalidPage(f"offset {bad_off} out of range 0..{MAX_OFFSET}")
        return arr.astype(np.int64, copy=False)

    def _pages(self, pages: object, count: int) -> list[bytes | bytearray]:
        if isinstance(pages, (str, bytes, bytearray)) or not isinstance(pages, Sequence):
            raise TypeError(f"pages must be a sequence of pages, got {type(pages).__name__}")
        if len(pages) != count:
            raise InvalidPage(f"{count} offsets but {len(pages)} pages")
        ps = self.page_size
        out: list[bytes | bytearray] = []
        for item in pages:
            page = item.tobytes() if isinstance(item, memoryview) else item
            if not isinstance(page, (bytes, bytearray)):
                raise TypeError(f"a page must be bytes-like, got {type(page).__name__}")
            if len(page) != ps:
                raise InvalidPage(f"a page must be exactly {ps} bytes, got {len(page)}")
            out.append(page)
        return out

    # -- the contract ----------------------------------------------------------------------------

    async def init(self, area: int, kind: AreaKind = "persistent") -> None:
        """Make an area usable (idempotent; a live area keeps its kind: InvalidPage for the
        other one until it is invalidated)."""
        area = self._area(area)
        if kind not in AREA_KINDS:
            raise InvalidPage(f"an area is persistent or ephemeral, not {kind!r}")
        ephemeral = kind == "ephemeral"
        if area in self._areas:
            if ephemeral != (area in self._ephemeral):
                raise InvalidPage(
                    f"area {area} is {self.kind_of(area)}: invalidate it before init as {kind}"
                )
            return
        if ephemeral and self.stores.ephemeral is None:
            raise InvalidPage(self.stores.why_not_ephemeral)
        if ephemeral:
            self._ephemeral.add(area)
        self.pool.set_ephemeral(area, ephemeral)
        self._areas.add(area)

    def kind_of(self, area: int) -> AreaKind:
        """What the area is (persistent when not initialised)."""
        return "ephemeral" if area in self._ephemeral else "persistent"

    async def store(self, area: int, offset: int, page: PageLike) -> bool:
        """Keep a page; False when refused (the old copy of the key is gone either way)."""
        return (await self.store_many(area, [offset], [page]))[0]

    async def load(self, area: int, offset: int, exclusive: bool = False) -> bytes | None:
        """The newest stored page or None; CorruptPage rather than wrong bytes."""
        return (await self.load_many(area, [offset], exclusive))[0]

    async def invalidate_page(self, area: int, offset: int) -> None:
        """Forget one page."""
        await self.invalidate_many(area, [offset])

    async def invalidate_area(self, area: int) -> None:
        """Forget every page of an area; it must be initialised again before new stores."""
        area = self._area(area)
        self._areas.discard(area)
        self._generation[area] = self._generation.get(area, 0) + 1
        # Every page of the area so far has a version up to the counter's: later ones are newer.
        dropped = await self._store(area).drop_area(area, self.versions.last)
        if area in self._ephemeral and area not in self._areas:
            self._cc["invalidates"] += dropped
            self._ephemeral.discard(area)
            self.pool.set_ephemeral(area, False)
        log.debug("area %d invalidated: %d pages dropped", area, dropped)

    async def store_many(
        self, area: int, offsets: Sequence[int], pages: Sequence[PageLike]
    ) -> list[bool]:
        """`store` for many keys in one pass, as if stored one after another."""
        area = self._area(area)
        offs = self._offsets(offsets)
        pgs = self._pages(pages, len(offs))
        if area not in self._areas:
            self._reject_no_area += len(offs)
            return [False] * len(offs)
        if area in self._ephemeral:
            self._cc["puts"] += len(offs)
        if len(pgs) > THREAD_BATCH and self.pool.config.keep_incompressible:
            # lz4 and xxh3 release the GIL: a large batch is compressed on worker threads,
            # so that the loop keeps serving (a 64 MiB NBD write is ~130 ms of lz4) and both
            # cores work; the pool then keeps the stored form, as for a client's pages.
            payloads, sums = await encode_in_threads(pgs, self.pool.config)
            if area not in self._areas:
                self._reject_no_area += len(offs)
                return [False] * len(offs)
            return await self._in_runs(
                offs,
                lambda i, j: self._put_encoded_chunked(area, offs[i:j], payloads[i:j], sums[i:j]),
            )
        return await self._in_runs(
            offs, lambda i, j: self._put_with(area, offs[i:j], RawPages(pgs[i:j]))
        )

    async def store_encoded_many(
        self,
        area: int,
        offsets: Sequence[int],
        payloads: Sequence[PageLike],
        checksums: Sequence[int],
    ) -> list[bool]:
        """Store pages already in stored form (see pagestore.encode) with their checksums.

        This is what ramster.Client sends: the client compresses, the node keeps the bytes as
        they are. A payload that does not expand to its checksum fails on load (CorruptPage).
        """
        area = self._area(area)
        offs = self._offsets(offsets)
        pls = self._payloads(payloads, len(offs))
        if len(checksums) != len(offs) or any(
            type(c) is not int or not 0 <= c < 1 << 64 for c in checksums
        ):
            raise InvalidPage("one checksum (an unsigned 64-bit int) per page")
        sums = list(checksums)
        if area not in self._areas:
            self._reject_no_area += len(offs)
            return [False] * len(offs)
        if area in self._ephemeral:
            self._cc["puts"] += len(offs)
        return await self._in_runs(
            offs, lambda i, j: self._put_encoded(area, offs[i:j], pls[i:j], sums[i:j])
        )

    async def _in_runs(
        self, offs: npt.NDArray[np.int64], put: Callable[[int, int], Awaitable[list[bool]]]
    ) -> list[bool]:
        """put(i, j) over runs of distinct keys, in order: a later store of a key wins."""
        if _distinct(offs):
            return await put(0, len(offs))
        keys = offs.tolist()
        results: list[bool] = []
        start = 0
        while start < len(keys):
            seen: set[int] = set()
            end = start
            while end < len(keys) and keys[end] not in seen:
                seen.add(keys[end])
                end += 1
            results += await put(start, end)
            start = end
        return results

    def _payloads(self, payloads: object, count: int) -> list[bytes | memoryview]:
        if isinstance(payloads, (str, bytes, bytearray)) or not isinstance(payloads, Sequence):
            raise TypeError(f"payloads must be a sequence, got {type(payloads).__name__}")
        if len(payloads) != count:
            raise InvalidPage(f"{count} offsets but {len(payloads)} payloads")
        ps = self.page_size
        out: list[bytes | memoryview] = []
        for item in payloads:
            if not isinstance(item, (bytes, bytearray, memoryview)):
                raise TypeError(f"a payload must be bytes-like, got {type(item).__name__}")
            if not 0 < len(item) <= ps:
                raise InvalidPage(f"a stored payload is 1 to {ps} bytes, got {len(item)}")
            out.append(item if isinstance(item, (bytes, memoryview)) else bytes(item))
        return out

    async def _put_encoded(
        self,
        area: int,
        offs: npt.NDArray[np.int64],
        payloads: list[bytes | memoryview],
        sums: list[int],
    ) -> list[bool]:
        """Store distinct keys in stored form (validated)."""
        return await self._put_with(area, offs, StoredPages(payloads, sums))

    async def _put_encoded_chunked(
        self,
        area: int,
        offs: npt.NDArray[np.int64],
        payloads: list[bytes | memoryview],
        sums: list[int],
    ) -> list[bool]:
        """`_put_encoded` a chunk at a time, yielding between chunks: keeping 16k pages is
        itself tens of milliseconds of the loop."""
        ok: list[bool] = []
        for i in range(0, len(offs), THREAD_CHUNK):
            j = i + THREAD_CHUNK
            if i:
                await asyncio.sleep(0)
                if area not in self._areas:  # invalidated meanwhile: keep nothing more
                    ok += [False] * (len(offs) - i)
                    break
            ok += await self._put_encoded(area, offs[i:j], payloads[i:j], sums[i:j])
        return ok

    async def _put_with(
        self, area: int, offs: npt.NDArray[np.int64], pages: Incoming
    ) -> list[bool]:
        versions = self.versions.issue(len(offs))
        if versions is None:
            # Every version this term may issue is used: one more would be a version of the
            # next term. Refused; the old copies go, as for any refused store: stale bytes
            # never come back.
            if self.versions.refused == len(offs):
                log.error(
                    "versions used up (%d of at most %d): stores refused until a new term",
                    self.versions.last,
                    self.versions.limit,
                )
            await self._store(area).drop(area, offs)
            return [False] * len(offs)
        generation = self.generation(area)

        def alive() -> bool:
            return self.generation(area) == generation and area in self._areas

        return await self._store(area).put(area, offs, pages, versions, alive)

    async def load_many(
        self, area: int, offsets: Sequence[int], exclusive: bool = False
    ) -> list[bytes | None]:
        """`load` for many keys in one pass."""
        area = self._area(area)
        offs = self._offsets(offsets)
        if area not in self._areas:
            return [None] * len(offs)
        if exclusive and not _distinct(offs):
            # The second exclusive load of a key finds it gone, as one after another would.
            out: list[bytes | None] = []
            for i in range(len(offs)):
                out += await self._get(area, offs[i : i + 1], True)
        else:
            out = await self._get(area, offs, exclusive)
        if area in self._ephemeral:
            self.count_gets(out)
        return out

    def count_gets(self, answers: Sequence[object | None]) -> None:
        """Count an ephemeral area's hits (succ_gets) and misses (failed_gets)."""
        misses = answers.count(None)
        self._cc["failed_gets"] += misses
        self._cc["succ_gets"] += len(answers) - misses

    async def _get(
        self, area: int, offs: npt.NDArray[np.int64], exclusive: bool
    ) -> list[bytes | None]:
        """Load keys (validated; distinct when exclusive)."""
        return await self._store(area).get(area, offs, exclusive)

    async def load_encoded_many(
        self, area: int, offsets: Sequence[int]
    ) -> list[tuple[int, Buffer] | None]:
        """(checksum, stored payload) per key, None where not stored; nothing is expanded here.

        The caller must check each payload against its checksum and, for any that fails, load
        it again with `load_many`, which verifies every copy and tries every holder.
        """
        area = self._area(area)
        offs = self._offsets(offsets)
        if area not in self._areas:
            return [None] * len(offs)
        out = await self._store(area).get_stored(area, offs)
        if area in self._ephemeral:
            self.count_gets(out)
        return out

    async def load_versioned_many(
        self, area: int, offsets: Sequence[int]
    ) -> list[tuple[int, bytes] | None]:
        """(version, page) per key, None where not stored; nothing is freed.

        With `release_many` this is an exclusive load that survives a lost reply: the pages
        go only once the caller has them and says so.
        """
        area = self._area(area)
        offs = self._offsets(offsets)
        if area not in self._areas:
            return [None] * len(offs)
        pages, versions = await self._store(area).get_versioned(area, offs)
        return [
            None if page is None or version is None else (version, page)
            for page, version in zip(pages, versions, strict=True)
        ]

    async def release_many(
        self, area: int, offsets: Sequence[int], versions: Sequence[int]
    ) -> list[bool]:
        """Free the keys whose stored version is still the one given (a newer store stays);
        True for each key freed."""
        area = self._area(area)
        offs = self._offsets(offsets)
        if len(versions) != len(offs):
            raise InvalidPage(f"{len(offs)} offsets but {len(versions)} versions")
        current = self.pool.versions(area, offs)
        go = [
            i
            for i, (now, want) in enumerate(zip(current, versions, strict=True))
            if now is not None and now == want
        ]
        if go:
            self.pool.note_exclusive(len(go))
            await self._store(area).drop(area, offs[go])
        freed = [False] * len(offs)
        for i in go:
            freed[i] = True
        return freed

    def generation(self, area: int) -> int:
        """How many times the area was invalidated."""
        return self._generation.get(area, 0)

    async def invalidate_many(self, area: int, offsets: Sequence[int]) -> None:
        """`invalidate_page` for many keys in one pass."""
        area = self._area(area)
        offs = self._offsets(offsets)
        if area in self._ephemeral:
            self._cc["invalidates"] += len(offs)
        await self._store(area).drop(area, offs)

    def statistics(self) -> FrontswapStatistics:
        """Pool counters plus the contract's own."""
        pool = self.pool.statistics()
        return FrontswapStatistics(
            pool=pool,
            areas=tuple(sorted(self._areas)),
            reject_no_area=self._reject_no_area,
            versions_issued=self.versions.last,
            ephemeral_areas=tuple(sorted(self._ephemeral)),
            cleancache={**self._cc, "evicts": pool.evicts},
        )
