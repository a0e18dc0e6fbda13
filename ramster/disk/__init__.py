"""The disk tier: compressed pages in a preallocated file (not wired into the node yet).

layout (record format, extent allocator; pure) · index (what is where; pure) · flow (config,
byte budget) · io (the OS seam, errors) · store (`DiskStore`: the async shell).
"""

from ramster.disk.flow import ByteBudget, DiskConfig
from ramster.disk.io import DiskError, DiskFull, Io, OsIo
from ramster.disk.layout import BLOCK, DiskKey, ExtentAllocator
from ramster.disk.store import DiskStore, Loaded

__all__ = [
    "BLOCK",
    "ByteBudget",
    "DiskConfig",
    "DiskError",
    "DiskFull",
    "DiskKey",
    "DiskStore",
    "ExtentAllocator",
    "Io",
    "Loaded",
    "OsIo",
]
