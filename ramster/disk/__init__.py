"""The disk tier: compressed pages in a preallocated file (not wired into the node yet).

layout (record format, extent allocator; pure).
"""

from ramster.disk.layout import BLOCK, DiskKey, ExtentAllocator

__all__ = ["BLOCK", "DiskKey", "ExtentAllocator"]
