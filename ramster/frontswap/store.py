"""Where a frontswap keeps pages: stores, each one thing, and the combinator that chains them.

The frontswap (`local.LocalFrontswap`) validates, numbers versions and counts; a store only
keeps, finds and forgets pages of validated, distinct keys. Every store of one frontswap
records in one index, its pool: a key is kept there (RAM) or recorded there as held
elsewhere (with its version, checksum and holder set). `Chain(fast, slow)` puts into `fast`
first and what it refuses into `slow`, and reads from `slow` what `fast` does not have; this is
how the cluster's stores are built (`frontswap.remote.stores`), as dask's spill buffer joins a
fast and a slow mapping instead of one subclassing the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ramster.pagestore import PagePool, PoolConfig, checksum, encode
from ramster.types import Buffer

I64 = npt.NDArray[np.int64]
Alive = Callable[[], bool]
"""Whether the area a store is writing is still the life it started in (not invalidated)."""


@dataclass(frozen=True, slots=True)
class RawPages:
    """Pages as the caller handed them in (the pool compresses them)."""

    pages: Sequence[bytes | bytearray]

    def __len__(self) -> int:
        return len(self.pages)

    def take(self, idx: Sequence[int]) -> RawPages:
        """The pages at these positions."""
        return RawPages([self.pages[i] for i in idx])

    def keep(
        self, pool: PagePool, area: int, offs: I64, versions: Sequence[int], evict: bool
    ) -> list[bool]:
        """Keep them in the pool; False where refused."""
        return pool.put_many(area, offs, self.pages, versions, evict)

    def encoded(self, config: PoolConfig) -> tuple[list[bytes], list[int]]:
        """Their stored forms and checksums (what holders keep)."""
        return [encode(p, config) for p in self.pages], [checksum(p) for p in self.pages]


@dataclass(frozen=True, slots=True)
class StoredPages:
    """Pages already in stored form with their checksums (a client compressed them)."""

    payloads: Sequence[bytes | memoryview]
    sums: Sequence[int]

    def __len__(self) -> int:
        return len(self.payloads)

    def take(self, idx: Sequence[int]) -> StoredPages:
        """The pages at these positions."""
        return StoredPages([self.payloads[i] for i in idx], [self.sums[i] for i in idx])

    def keep(
        self, pool: PagePool, area: int, offs: I64, versions: Sequence[int], evict: bool
    ) -> list[bool]:
        """Keep them in the pool as they are; False where refused."""
        return pool.put_stored_many(area, offs, self.payloads, versions, self.sums, evict)

    def encoded(self, config: PoolConfig) -> tuple[list[bytes], list[int]]:
        """Their stored forms and checksums (what holders keep)."""
        return [bytes(p) for p in self.payloads], list(self.sums)


Incoming = RawPages | StoredPages
"""Pages on their way into a store."""


class AreaStore(Protocol):
    """Where the pages of one kind of area go; keys are validated and distinct."""

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Keep pages; False where refused (the old copy of each key is gone either way)."""
        ...

    async def get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        """The pages, None where not stored; exclusive frees what it returns."""
        ...

    async def get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        """The pages with the version each had when it was read."""
        ...

    async def get_stored(self, area: int, offs: I64) -> list[tuple[int, Buffer] | None]:
        """(checksum, stored payload) per key, unverified; None where not stored."""
        ...

    async def drop(self, area: int, offs: I64) -> None:
        """Forget the keys."""

    async def drop_area(self, area: int, max_version: int) -> int:
        """Forget every page of the area (all of version up to max_version); pages forgotten."""
        ...


class PoolStore:
    """The local pool: pages compressed in this process's RAM."""

    def __init__(self, pool: PagePool, evict: bool = True) -> None:
        self.pool = pool
        self._evict = evict

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Keep pages in the pool (an ephemeral area's colder pages give way)."""
        return pages.keep(self.pool, area, offs, versions, self._evict)

    async def get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        """Pages in the pool."""
        return self.pool.get_many(area, offs, exclusive)

    async def get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        """Pages in the pool and their versions, read at one moment."""
        pages = self.pool.get_many(area, offs, False)
        return pages, self.pool.versions(area, offs)

    async def get_stored(self, area: int, offs: I64) -> list[tuple[int, Buffer] | None]:
        """Stored forms in the pool."""
        return [
            None if item is None else (item[1], item[2])
            for item in self.pool.get_stored_many(area, offs)
        ]

    async def drop(self, area: int, offs: I64) -> None:
        """Forget keys in the pool."""
        self.pool.drop_many(area, offs)

    async def drop_area(self, area: int, max_version: int) -> int:
        """Forget the area in the pool; a store behind it forgets its copies area-wide."""
        return self.pool.drop_area(area, record_remote=False)


class ReadsThrough:
    """A store that does only its own puts: its reads and drops are those of `reads`."""

    reads: AreaStore

    async def get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        """The pages, as `reads` has them."""
        return await self.reads.get(area, offs, exclusive)

    async def get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        """The pages with their versions, as `reads` has them."""
        return await self.reads.get_versioned(area, offs)

    async def get_stored(self, area: int, offs: I64) -> list[tuple[int, Buffer] | None]:
        """Stored forms, as `reads` has them."""
        return await self.reads.get_stored(area, offs)

    async def drop(self, area: int, offs: I64) -> None:
        """Forget the keys in `reads`."""
        await self.reads.drop(area, offs)

    async def drop_area(self, area: int, max_version: int) -> int:
        """Forget the area in `reads`."""
        return await self.reads.drop_area(area, max_version)


class Chain:
    """Two stores as one: `fast` first, `slow` for what `fast` refuses or does not have.

    Both record in one index (`pool`), so a key is in one of them at a time, and an exclusive
    read frees only after everything is read: a slow read that fails frees nothing. `then` runs
    after every put that returns (the cluster's: the spiller looks at the pool's usage).
    """

    def __init__(
        self,
        pool: PagePool,
        fast: AreaStore,
        slow: AreaStore,
        then: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.fast = fast
        self.slow = slow
        self._then = then

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Into `fast`; what it refused into `slow` (unless the area died meanwhile)."""
        ok = await self.fast.put(area, offs, pages, versions, alive)
        missing = [i for i, flag in enumerate(ok) if not flag]
        if missing and alive():
            stored = await self.slow.put(
                area, offs[missing], pages.take(missing), [versions[i] for i in missing], alive
            )
            for i, flag in zip(missing, stored, strict=True):
                ok[i] = flag
        if self._then is not None:
            self._then()
        return ok

    async def get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        """From `fast`, then what it misses from `slow`."""
        pages, versions = await self.fast.get_versioned(area, offs)
        miss = [i for i, page in enumerate(pages) if page is None]
        if miss:
            # No await since fast's read (it is the pool's): the slow side sees the same index.
            got, _ = await self.slow.get_versioned(area, offs[miss])
            for i, page in zip(miss, got, strict=True):
                pages[i] = page
        return pages, versions

    async def get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        """Read everything, then (exclusive) free in one step what is still the version read:
        a read that fails or is cancelled frees nothing; a key stored meanwhile keeps its copy."""
        pages, versions = await self.get_versioned(area, offs)
        if not exclusive:
            return pages
        now = self.pool.versions(area, offs)
        done = [
            i
            for i, (page, before, after) in enumerate(zip(pages, versions, now, strict=True))
            if page is not None and before is not None and before == after
        ]
        if done:
            self.pool.note_exclusive(len(done))
            await self.drop(area, offs[done])
        return pages

    async def get_stored(self, area: int, offs: I64) -> list[tuple[int, Buffer] | None]:
        """From `fast`, then what it misses from `slow`."""
        out = await self.fast.get_stored(area, offs)
        miss = [i for i, item in enumerate(out) if item is None]
        if miss:
            got = await self.slow.get_stored(area, offs[miss])
            for i, item in zip(miss, got, strict=True):
                out[i] = item
        return out

    async def drop(self, area: int, offs: I64) -> None:
        """Forget the keys in both."""
        await self.fast.drop(area, offs)
        await self.slow.drop(area, offs)

    async def drop_area(self, area: int, max_version: int) -> int:
        """Forget the area in both; pages forgotten (both record in one index)."""
        dropped = await self.fast.drop_area(area, max_version)
        return dropped + await self.slow.drop_area(area, max_version)


@dataclass(frozen=True, slots=True)
class Stores:
    """A frontswap's stores by area kind; without an ephemeral one, `why_not_ephemeral`."""

    persistent: AreaStore
    ephemeral: AreaStore | None = None
    why_not_ephemeral: str = "this frontswap has no ephemeral areas"


class Versions:
    """The owner's version counter: every store gets new, rising versions, none past `limit`
    (an export term's range ends where the next term's begins)."""

    def __init__(self, base: int = 0, limit: int = (1 << 63) - 1) -> None:
        self.last = base
        self.limit = limit
        self.refused = 0
        """Pages refused because their versions would have passed the limit."""

    def issue(self, count: int) -> range | None:
        """`count` new versions, or None (and counted) if they would pass the limit."""
        if self.last + count > self.limit:
            self.refused += count
            return None
        first = self.last + 1
        self.last += count
        return range(first, first + count)

    def seen(self, version: int) -> None:
        """Issue only versions above one already in use (pages rebuilt from holders)."""
        self.last = max(self.last, version)

    def start_at(self, base: int, limit: int | None = None) -> None:
        """Issue versions above `base` from now on and, if given, none above `limit`."""
        self.last = max(self.last, base)
        if limit is not None:
            self.limit = limit
