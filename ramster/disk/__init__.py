"""The disk tier: compressed pages in a preallocated file (not wired into the node yet).

layout (record format, extent allocator; pure) · flow (config, byte budget) · io (the OS seam,
errors).
"""

from ramster.disk.flow import ByteBudget, DiskConfig
from ramster.disk.io import DiskError, DiskFull, Io, OsIo
from ramster.disk.layout import BLOCK, DiskKey, ExtentAllocator

__all__ = [
    "BLOCK",
    "ByteBudget",
    "DiskConfig",
    "DiskError",
    "DiskFull",
    "DiskKey",
    "ExtentAllocator",
    "Io",
    "OsIo",
]
