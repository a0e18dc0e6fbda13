"""Which pages of an export may hold data: a sparse bitmap, so that large discards and reads of
never-written blocks cost nothing.

It is kept a superset of what the frontswap area holds (marked before a store, cleared only after
an invalidate), so a clear bit always means "reads as zeros".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

CHUNK_BITS = 16
CHUNK = 1 << CHUNK_BITS
"""Pages per chunk: 256 MiB of export per 64 KiB array, allocated when first written."""
_MASK = CHUNK - 1
SMALL = 48
"""Below this many pages a Python loop beats numpy's per-call overhead."""


class PageMap:
    """A set of page numbers in chunks of numpy booleans."""

    def __init__(self) -> None:
        self._chunks: dict[int, npt.NDArray[np.bool_]] = {}

    def _split(self, pages: Sequence[int] | I64) -> tuple[I64, I64, list[int]]:
        arr = np.asarray(pages, dtype=np.int64)
        hi = arr >> CHUNK_BITS
        keys = [int(hi[0])] if len(hi) and hi.min() == hi.max() else np.unique(hi).tolist()
        return arr, hi, keys

    def add(self, pages: Sequence[int] | I64) -> None:
        """Mark pages as possibly holding data."""
        if not len(pages):
            return
        if len(pages) < SMALL and isinstance(pages, list):
            chunks = self._chunks
            for page in pages:
                chunk = chunks.get(page >> CHUNK_BITS)
                if chunk is None:
                    chunk = chunks[page >> CHUNK_BITS] = np.zeros(CHUNK, dtype=np.bool_)
                chunk[page & _MASK] = True
            return
        arr, hi, keys = self._split(pages)
        for key in keys:
            chunk = self._chunks.get(key)
            if chunk is None:
                chunk = self._chunks[key] = np.zeros(CHUNK, dtype=np.bool_)
            sel = arr if len(keys) == 1 else arr[hi == key]
            chunk[sel & _MASK] = True

    def discard(self, pages: Sequence[int] | I64) -> None:
        """Mark pages as reading zeros (an emptied chunk is freed on large discards only)."""
        if not len(pages):
            return
        if len(pages) < SMALL and isinstance(pages, list):
            chunks = self._chunks
            for page in pages:
                chunk = chunks.get(page >> CHUNK_BITS)
                if chunk is not None:
                    chunk[page & _MASK] = False
            return
        arr, hi, keys = self._split(pages)
        for key in keys:
            chunk = self._chunks.get(key)
            if chunk is None:
                continue
            sel = arr if len(keys) == 1 else arr[hi == key]
            chunk[sel & _MASK] = False
            if not chunk.any():
                del self._chunks[key]

    def present(self, pages: list[int]) -> list[int]:
        """Indexes (into `pages`) of the pages that may hold data."""
        if len(pages) >= SMALL:
            found: list[int] = np.flatnonzero(self.contains(pages)).tolist()
            return found
        chunks = self._chunks
        out = []
        for i, page in enumerate(pages):
            chunk = chunks.get(page >> CHUNK_BITS)
            if chunk is not None and chunk[page & _MASK]:
                out.append(i)
        return out

    def contains(self, pages: Sequence[int] | I64) -> npt.NDArray[np.bool_]:
        """One boolean per page: may it hold data?"""
        arr = np.asarray(pages, dtype=np.int64)
        out = np.zeros(len(arr), dtype=np.bool_)
        if not self._chunks or not len(arr):
            return out
        hi = arr >> CHUNK_BITS
        for key in np.unique(hi).tolist():
            chunk = self._chunks.get(key)
            if chunk is not None:
                sel = hi == key
                out[sel] = chunk[arr[sel] & _MASK]
        return out

    def in_range(self, first: int, end: int) -> I64:
        """Marked pages within first..end-1, ascending."""
        found: list[I64] = []
        if end <= first:
            return np.zeros(0, dtype=np.int64)
        for key in sorted(
            k for k in self._chunks if first >> CHUNK_BITS <= k <= (end - 1) >> CHUNK_BITS
        ):
            base = key << CHUNK_BITS
            lo = max(first - base, 0)
            hi = min(end - base, CHUNK)
            found.append(np.flatnonzero(self._chunks[key][lo:hi]).astype(np.int64) + base + lo)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(sum(int(c.sum()) for c in self._chunks.values()))

    @property
    def nbytes(self) -> int:
        """Memory held by the map."""
        return len(self._chunks) * CHUNK
