"""The local tier: a compressed page pool (lz4, same-filled pages, slabs, budget). No I/O.

codec (stored form, checksum) · core (slot table, primitives) · pool (stores, loads, drops)
· remote (remote-only entries) · cold (cold-first order) · slab · index · lent (other owners'
pages) · verify (checking a held copy).
"""

from ramster.pagestore.codec import checksum, encode, expand, stored_kind
from ramster.pagestore.cold import ColdPage
from ramster.pagestore.config import MAX_AREA, MAX_OFFSET, PoolConfig
from ramster.pagestore.pool import PagePool, PoolStatistics

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
