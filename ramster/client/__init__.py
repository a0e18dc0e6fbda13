"""Programs' side of ramster: `Client` and `SyncClient` (the frontswap contract of a running
node, over the authenticated RPC) and `PageCache` (a key-value cache on an ephemeral area)."""

from ramster.client.cache import PageCache, SyncPageCache
from ramster.client.node import Client, SyncClient

__all__ = ["Client", "PageCache", "SyncClient", "SyncPageCache"]
