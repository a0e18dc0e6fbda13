"""The local tier: a compressed page pool (lz4, same-filled pages, slabs, budget). No I/O."""

from ramster.pagestore.config import MAX_AREA, MAX_OFFSET, PoolConfig
from ramster.pagestore.pool import (
    ColdPage,
    PagePool,
    PoolStatistics,
    checksum,
    encode,
    expand,
    stored_kind,
)

__all__ = [
    "MAX_AREA",
    "MAX_OFFSET",
    "ColdPage",
    "PagePool",
    "PoolConfig",
    "PoolStatistics",
    "checksum",
    "encode",
    "expand",
    "stored_kind",
]
