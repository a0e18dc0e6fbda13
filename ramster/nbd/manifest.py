"""Which blocks of a replicated export were written: its page map as bitmap pages, stored in the
export's own manifest area like any page (R copies, versioned, newest wins at a rebuild), each
page in one of two slots (`slot_key`; `manifest_store` writes them).

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


SLOT_STRIDE = 1 << 31
"""Key distance between a page's two slots (far above any page number, and 2 * SLOT_STRIDE - 1
a valid offset): page n is kept at key n (slot 0, where a manifest from before slots has it)
or n + SLOT_STRIDE (slot 1)."""


def slot_key(number: int, slot: int) -> int:
    """The key of manifest page `number` in `slot` (0 or 1)."""
    return number + slot * SLOT_STRIDE


def newest_slots(keys: I64, versions: npt.NDArray[np.uint64]) -> tuple[I64, I64, I64]:
    """Per page among the keys of both slots, sorted by page: (page numbers, the key of its
    newest copy, that copy's index into `keys`). Keys of no slot are ignored."""
    keys = np.asarray(keys, dtype=np.int64)
    valid = np.flatnonzero((keys >= 0) & (keys < 2 * SLOT_STRIDE))
    numbers = keys[valid] % SLOT_STRIDE
    order = valid[np.lexsort((versions[valid], numbers))]  # by page, then version
    by_page = keys[order] % SLOT_STRIDE
    last = np.r_[by_page[1:] != by_page[:-1], True] if len(order) else np.zeros(0, dtype=bool)
    pick = order[last]
    return (keys[pick] % SLOT_STRIDE).astype(np.int64), keys[pick], pick.astype(np.int64)
