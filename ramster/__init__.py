"""ramster: a memory cluster for ordinary Linux machines built on frontswap and compressed pools."""

from ramster._version import __version__
from ramster.client import Client, SyncClient
from ramster.errors import (
    CorruptPage,
    InvalidPage,
    RamsterError,
)
from ramster.frontswap import Frontswap, LocalFrontswap
from ramster.pagestore import PagePool, PoolConfig, PoolStatistics
from ramster.types import Area, Offset, Version

__all__ = [
    "Area",
    "Client",
    "CorruptPage",
    "Frontswap",
    "InvalidPage",
    "LocalFrontswap",
    "Offset",
    "PagePool",
    "PoolConfig",
    "PoolStatistics",
    "RamsterError",
    "SyncClient",
    "Version",
    "__version__",
]
