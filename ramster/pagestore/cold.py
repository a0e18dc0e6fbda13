"""Cold-first order: the pages least recently stored or loaded, for the spiller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ramster.pagestore.codec import LZ4, RAW, SAME
from ramster.pagestore.core import PoolCore
from ramster.pagestore.slab import OBJ_BITS, OBJ_MASK


@dataclass(frozen=True, slots=True)
class ColdPage:
    """A stored page in its stored form, as handed to the spiller."""

    area: int
    offset: int
    version: int
    checksum: int
    kind: int
    payload: bytes
    """lz4 block (LZ4), the raw page (RAW) or the 8-byte pattern (SAME)."""


class ColdOrder(PoolCore):
    """The coldest pages of a pool, in stored form."""

    def coldest(self, n: int, include_same_filled: bool = False) -> list[ColdPage]:
        """Up to n of the least recently stored or loaded pages, coldest first, left in place."""
        m = self._meta
        kinds = m["kind"][: self._hw].astype(np.uint8, copy=False)
        live = np.flatnonzero((kinds >= (SAME if include_same_filled else LZ4)) & (kinds <= RAW))
        if not len(live) or n <= 0:
            return []
        ticks = m["tick"][live]
        if len(live) > n:
            part = np.argpartition(ticks, n - 1)[:n]
            chosen = live[part[np.argsort(ticks[part], kind="stable")]]
        else:
            chosen = live[np.argsort(ticks, kind="stable")]
        # One fancy index per column, then plain ints: numpy scalars cost ~100 ns per access.
        kinds_l, handles, lengths, areas, offsets, versions, sums = (
            m[name][chosen].tolist()
            for name in ("kind", "handle", "length", "area", "offset", "version", "checksum")
        )
        slabs = self._alloc.table()
        ps = self._ps
        out = []
        for kind, handle, length, area, offset, version, checksum in zip(
            kinds_l, handles, lengths, areas, offsets, versions, sums, strict=True
        ):
            if kind == SAME:
                payload = handle.to_bytes(8, "little")
            else:
                slab = slabs[handle >> OBJ_BITS]
                assert slab is not None
                at = (handle & OBJ_MASK) * slab.size
                payload = bytes(slab.buf[at : at + (length if kind == LZ4 else ps)])
            out.append(ColdPage(area, offset, version, checksum, kind, payload))
        return out
