"""Which blocks of a replicated export were written: its page map as bitmap pages, stored in the
export's own manifest area like any page (R copies, versioned, newest wins at a rebuild).

A restarted server trusts the manifest over the holders' inventories: a block whose bit is set
and that no holder has is lost (read as an I/O error), a copy whose bit is clear is stale (a
later zero write or trim): never zeros for lost data, never old data for a zeroed block.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from ramster.nbd.pagemap import PageMap

I64 = npt.NDArray[np.int64]

PAGE_BITS = 15
SPAN = 1 << PAGE_BITS
"""Blocks one manifest page covers (a 4 KiB page of bits)."""
PAGE_BYTES = SPAN // 8


def pages_of(blocks: Iterable[int]) -> set[int]:
    """The manifest pages that cover the blocks."""
    return {b >> PAGE_BITS for b in blocks}


def encode(pages: PageMap, number: int) -> bytes:
    """Manifest page `number`: one bit per block, little-endian bit order."""
    base = number << PAGE_BITS
    bits = np.zeros(SPAN, dtype=np.bool_)
    present = pages.in_range(base, base + SPAN)
    bits[present - base] = True
    return np.packbits(bits, bitorder="little").tobytes()


def decode(number: int, data: bytes) -> I64:
    """The blocks manifest page `number` marks as written; ValueError if it is no such page."""
    if len(data) != PAGE_BYTES:
        raise ValueError(f"a manifest page is {PAGE_BYTES} bytes, got {len(data)}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.int64) + (number << PAGE_BITS)
