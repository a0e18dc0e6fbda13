"""Cold-first order: the pages least recently stored or loaded, for the spiller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ramster.pagestore.codec import LZ4, RAW, SAME
from ramster.pagestore.core import PoolCore


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
        out = []
        for slot in chosen.tolist():
            kind = int(m["kind"][slot])
            handle = int(m["handle"][slot])
            if kind == SAME:
                payload = handle.to_bytes(8, "little")
            else:
                size = int(m["length"][slot]) if kind == LZ4 else self._ps
                payload = bytes(self._alloc.view(handle, size))
            out.append(
                ColdPage(
                    area=int(m["area"][slot]),
                    offset=int(m["offset"][slot]),
                    version=int(m["version"][slot]),
                    checksum=int(m["checksum"][slot]),
                    kind=kind,
                    payload=payload,
                )
            )
        return out
