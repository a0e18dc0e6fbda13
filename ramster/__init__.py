"""ramster: a memory cluster for ordinary Linux machines built on frontswap and compressed pools.

The public surface is re-exported here and imported on first use, so that `import ramster`
(or any of its parts) loads no more than it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ramster._version import __version__

if TYPE_CHECKING:
    from ramster.client import Client, PageCache, SyncClient, SyncPageCache
    from ramster.errors import (
        CorruptPage,
        InvalidPage,
        PageUnavailable,
        RamsterError,
    )
    from ramster.frontswap import Frontswap, LocalFrontswap
    from ramster.pagestore import PagePool, PoolConfig, PoolStatistics
    from ramster.types import Area, Offset, Version

_EXPORTS = {
    "Client": "ramster.client",
    "SyncClient": "ramster.client",
    "PageCache": "ramster.client",
    "SyncPageCache": "ramster.client",
    "CorruptPage": "ramster.errors",
    "InvalidPage": "ramster.errors",
    "PageUnavailable": "ramster.errors",
    "RamsterError": "ramster.errors",
    "Frontswap": "ramster.frontswap",
    "LocalFrontswap": "ramster.frontswap",
    "PagePool": "ramster.pagestore",
    "PoolConfig": "ramster.pagestore",
    "PoolStatistics": "ramster.pagestore",
    "Area": "ramster.types",
    "Offset": "ramster.types",
    "Version": "ramster.types",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ramster' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Area",
    "Client",
    "CorruptPage",
    "Frontswap",
    "InvalidPage",
    "LocalFrontswap",
    "Offset",
    "PageCache",
    "PagePool",
    "PageUnavailable",
    "PoolConfig",
    "PoolStatistics",
    "RamsterError",
    "SyncClient",
    "SyncPageCache",
    "Version",
    "__version__",
]
