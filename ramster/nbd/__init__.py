"""NBD exports: a Linux host swaps to ramster (`nbd-client -b 4096 HOST PORT /dev/nbd0 -N NAME`).

Sans-IO protocol in `handshake` and `wire`, block semantics over frontswap in `export`, the
asyncio shell in `server`.
"""

from ramster.nbd.config import ExportSpec, NbdConfig, parse_allow, parse_exports
from ramster.nbd.export import Export
from ramster.nbd.server import NbdServer, NbdStatistics, local_exports
from ramster.nbd.statistics import ExportStatistics

__all__ = [
    "Export",
    "ExportSpec",
    "ExportStatistics",
    "NbdConfig",
    "NbdServer",
    "NbdStatistics",
    "local_exports",
    "parse_allow",
    "parse_exports",
]
