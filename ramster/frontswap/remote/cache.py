"""A read cache for a replicated area: hot pages kept here as well, in stored form.

The index (the owner's pool) points at the holders' copies; a cached copy is used only while
its version is the index's, so a stale one is never returned. When the cache is full, its
coldest pages make room a batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ramster.errors import CorruptPage
from ramster.pagestore import PagePool, PoolConfig
from ramster.types import Buffer

I64 = npt.NDArray[np.int64]

EVICT_FRACTION = 8
"""A full cache frees this fraction of its pages at once (one scan per many stores)."""


class ReadCache:
    """Pages by (area, offset, version), within a byte budget."""

    def __init__(self, config: PoolConfig) -> None:
        self.pool = PagePool(config)
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    def get(self, area: int, offs: I64, versions: Sequence[int | None]) -> dict[int, bytes]:
        """The cached pages among the keys whose version is the one asked for (by index)."""
        try:
            pages = self.pool.get_many(area, offs)
        except CorruptPage:
            self.pool.drop_many(area, offs)  # a bad cached copy is only a miss
            self.misses += len(offs)
            return {}
        have = self.pool.versions(area, offs)
        out = {
            i: page
            for i, (page, held, want) in enumerate(zip(pages, have, versions, strict=True))
            if page is not None and held is not None and held == want
        }
        self.hits += len(out)
        self.misses += len(offs) - len(out)
        return out

    def put_stored(
        self,
        area: int,
        offs: I64,
        payloads: Sequence[Buffer],
        versions: Sequence[int],
        sums: Sequence[int],
    ) -> None:
        """Keep pages in stored form (what does not fit after an eviction is left out)."""
        if not len(offs):
            return
        kept = self.pool.put_stored_many(area, offs, payloads, versions, sums)
        if not all(kept):
            self._evict()
            miss = [i for i, ok in enumerate(kept) if not ok]
            self.pool.put_stored_many(
                area,
                offs[miss],
                [payloads[i] for i in miss],
                [versions[i] for i in miss],
                [sums[i] for i in miss],
            )

    def put(self, area: int, offs: I64, pages: Sequence[bytes], versions: Sequence[int]) -> None:
        """Keep pages just read from holders."""
        if not len(offs):
            return
        kept = self.pool.put_many(area, offs, list(pages), versions)
        if not all(kept):
            self._evict()
            miss = [i for i, ok in enumerate(kept) if not ok]
            self.pool.put_many(
                area, offs[miss], [pages[i] for i in miss], [versions[i] for i in miss]
            )

    def drop(self, area: int, offs: I64) -> None:
        """Forget keys (an overwrite's old version, an invalidation)."""
        self.pool.drop_many(area, offs)

    def drop_area(self, area: int) -> None:
        """Forget an area."""
        self.pool.drop_area(area)

    def _evict(self) -> None:
        stats = self.pool.statistics()
        count = max(64, (stats.stored_pages + stats.same_filled_pages) // EVICT_FRACTION)
        by_area: dict[int, list[int]] = {}
        for page in self.pool.coldest(count, include_same_filled=True):
            by_area.setdefault(page.area, []).append(page.offset)
        for area, offsets in by_area.items():
            self.evicted += self.pool.drop_many(area, offsets)

    def statistics(self) -> dict[str, int]:
        """Hits, misses, evictions and what the cache holds."""
        stats = self.pool.statistics()
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_evicted": self.evicted,
            "cache_pages": stats.stored_pages + stats.same_filled_pages,
            "cache_bytes": self.pool.used_bytes,
        }
