"""The remote tier of frontswap: spilling to R holders, verified remote loads, re-replication.

holders (the transport seam, holder sets, shared state) · spill (the spiller) · fetch (remote
loads) · repair (re-replication and moves) · drops (versioned drops, orphans) · tier (the
RemoteTier that composes them; stores: the chain behind the frontswap contract).
"""

from ramster.frontswap.remote.config import SpillConfig
from ramster.frontswap.remote.holders import Holders
from ramster.frontswap.remote.tier import RemoteTier

__all__ = ["Holders", "RemoteTier", "SpillConfig"]
