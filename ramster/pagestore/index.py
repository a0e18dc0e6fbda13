"""Key index: (area, offset) -> slot, as a two-level radix table of int32 leaves.

Dense offsets (what swap areas produce) cost about 4 bytes a page; a leaf is only allocated
when a page lands in its range. Lookups and updates take whole batches (numpy arrays); the
`*_small` twins do the same for a few keys as plain ints, without numpy's fixed cost per call.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

LEAF_BITS = 6
LEAF_SIZE = 1 << LEAF_BITS
LEAF_MASK = LEAF_SIZE - 1
DICT_ENTRY_BYTES = 160
"""Rough cost of one leaf's entries: the top-level dict (entry, index slot, key int, row int)
and its area's set of leaves (so that one area is walked without the others)."""

ROW_BYTES = LEAF_SIZE * 4 + 4 + 8
"""A leaf row plus its live count and its reverse key."""

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


class RadixIndex:
    """Maps (area, offset) to a slot number; 0 means absent."""

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}  # (area << 32 | offset >> LEAF_BITS) -> leaf row
        self._leaves: I32 = np.zeros((16, LEAF_SIZE), dtype=np.int32)
        self._leaf_live = np.zeros(16, dtype=np.int32)  # entries in use per row
        self._row_top = np.zeros(16, dtype=np.int64)  # row -> its key in _rows
        self._free_rows: list[int] = []
        self._used_rows = 0
        self._area_tops: dict[int, set[int]] = {}  # area -> keys in _rows of its leaves
        self._views()

    def _views(self) -> None:
        # Item access through memoryviews costs a fraction of numpy's scalar indexing.
        self._flat = self._leaves.reshape(-1).data
        self._live_view = self._leaf_live.data

    @property
    def nbytes(self) -> int:
        """Memory held by the index, in bytes."""
        arrays = self._leaves.nbytes + self._leaf_live.nbytes + self._row_top.nbytes
        return int(arrays) + DICT_ENTRY_BYTES * len(self._rows)

    def growth_bytes(self, area: int, offsets: I64) -> int:
        """Exactly how many bytes `assign(area, offsets, ...)` would add to `nbytes`."""
        tops = np.unique((area << 32) | (offsets >> LEAF_BITS)).tolist()
        return self._growth_for(sum(1 for t in tops if t not in self._rows))

    def growth_bytes_small(self, area: int, offsets: list[int]) -> int:
        """`growth_bytes` for a few keys as plain ints."""
        base = area << 32
        rows = self._rows
        return self._growth_for(
            len({t for o in offsets if (t := base | o >> LEAF_BITS) not in rows})
        )

    def _growth_for(self, new: int) -> int:
        """Bytes `new` more rows add: the row arrays grow as `_row` grows them, a step of
        max(16, a quarter) at a time, until the rows fit."""
        if not new:
            return 0
        short = new - len(self._free_rows) - (len(self._leaves) - self._used_rows)
        rows = len(self._leaves)
        grown = 0
        while short > 0:
            step = max(16, rows // 4)
            rows += step
            grown += step
            short -= step
        return grown * ROW_BYTES + new * DICT_ENTRY_BYTES

    def has_area(self, area: int) -> bool:
        """True if any key of the area is present."""
        return area in self._area_tops

    def _rows_for(self, area: int, offsets: I64, create: bool) -> I64:
        tops = offsets >> LEAF_BITS
        n = len(tops)
        if not n:
            return np.zeros(0, dtype=np.int64)
        lo, hi = int(tops.min()), int(tops.max())
        base = area << 32
        if hi - lo <= 4 * n:
            # Dense keys (the usual case): one dict probe per leaf in range, no sort.
            get = self._rows.get
            table = np.fromiter(
                (get(base | t, -1) for t in range(lo, hi + 1)), np.int64, hi - lo + 1
            )
            if create:
                # Rows only for leaves that get a key (growth_bytes counts no others), ascending.
                wanted = np.zeros(hi - lo + 1, dtype=bool)
                wanted[tops - lo] = True
                for t in np.flatnonzero(wanted & (table < 0)).tolist():
                    table[t] = self._row(base | (lo + t), True)
            out: I64 = table[tops - lo]
            return out
        uniq, inverse = np.unique(tops, return_inverse=True)
        found = np.fromiter((self._row(base | int(t), create) for t in uniq), np.int64, len(uniq))
        return found[inverse]

    def _row(self, top: int, create: bool) -> int:
        row = self._rows.get(top, -1)
        if row >= 0 or not create:
            return row
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            row = self._used_rows
            self._used_rows += 1
            if row >= len(self._leaves):
                grow = max(16, len(self._leaves) // 4)
                self._leaves = np.concatenate(
                    [self._leaves, np.zeros((grow, LEAF_SIZE), dtype=np.int32)]
                )
                self._leaf_live = np.concatenate([self._leaf_live, np.zeros(grow, np.int32)])
                self._row_top = np.concatenate([self._row_top, np.zeros(grow, np.int64)])
                self._views()
        self._rows[top] = row
        self._row_top[row] = top
        self._area_tops.setdefault(top >> 32, set()).add(top)
        return row

    def lookup(self, area: int, offsets: I64) -> I32:
        """Slots of the given keys (0 where absent)."""
        rows = self._rows_for(area, offsets, create=False)
        found = self._leaves[rows, offsets & LEAF_MASK]  # row -1 reads a real row: masked next
        return np.where(rows >= 0, found, 0).astype(np.int32, copy=False)

    def assign(self, area: int, offsets: I64, slots: I32) -> None:
        """Point keys (absent before, distinct) at slots."""
        rows = self._rows_for(area, offsets, create=True)
        self._leaves[rows, offsets & LEAF_MASK] = slots
        np.add.at(self._leaf_live, rows, 1)

    def remove(self, area: int, offsets: I64) -> None:
        """Forget keys that are present (distinct); empty leaves are recycled."""
        rows = self._rows_for(area, offsets, create=False)
        self._leaves[rows, offsets & LEAF_MASK] = 0
        np.subtract.at(self._leaf_live, rows, 1)
        for row in np.unique(rows[self._leaf_live[rows] == 0]).tolist():
            self._drop_row(int(row))

    def lookup_small(self, area: int, offsets: list[int]) -> list[int]:
        """`lookup` for a few keys as plain ints."""
        base = area << 32
        get = self._rows.get
        flat = self._flat
        out = []
        for o in offsets:
            row = get(base | o >> LEAF_BITS, -1)
            out.append(flat[row << LEAF_BITS | o & LEAF_MASK] if row >= 0 else 0)
        return out

    def assign_small(self, area: int, offsets: list[int], slots: list[int]) -> None:
        """`assign` for a few keys as plain ints."""
        base = area << 32
        rows = self._rows
        tops = [base | o >> LEAF_BITS for o in offsets]
        # New rows in ascending order of their keys, as `assign` creates them.
        for top in sorted({t for t in tops if t not in rows}):
            self._row(top, True)
        flat = self._flat  # after _row: a new row may have replaced the arrays and views
        live = self._live_view
        for top, o, slot in zip(tops, offsets, slots, strict=True):
            row = rows[top]
            flat[row << LEAF_BITS | o & LEAF_MASK] = slot
            live[row] += 1

    def remove_small(self, area: int, offsets: list[int]) -> None:
        """`remove` for a few keys as plain ints."""
        base = area << 32
        rows = self._rows
        flat = self._flat
        live = self._live_view
        emptied = []
        for o in offsets:
            row = rows[base | o >> LEAF_BITS]
            flat[row << LEAF_BITS | o & LEAF_MASK] = 0
            live[row] -= 1
            if not live[row]:
                emptied.append(row)
        # Ascending, as `remove` drops them: both leave the same free-row order.
        for row in sorted(emptied):
            self._drop_row(row)

    def _drop_row(self, row: int) -> None:
        top = int(self._row_top[row])
        del self._rows[top]
        self._free_rows.append(row)
        area = top >> 32
        tops = self._area_tops[area]
        tops.discard(top)
        if not tops:
            del self._area_tops[area]

    def area_leaves(self, area: int) -> list[int]:
        """The leaves of an area that hold keys, as the first offset of each, ascending."""
        return sorted((t & 0xFFFFFFFF) << LEAF_BITS for t in self._area_tops.get(area, ()))

    def leaf_offsets(self, area: int, first: int) -> I64:
        """The offsets present in the leaf that starts at `first` (ascending; empty if none)."""
        row = self._rows.get(area << 32 | first >> LEAF_BITS, -1)
        if row < 0:
            return np.zeros(0, dtype=np.int64)
        return (np.flatnonzero(self._leaves[row]) + first).astype(np.int64)

    def area_offsets(self, area: int, limit: int | None = None) -> I64:
        """The offsets present in an area (unordered); with a limit, at least `limit` of them
        (whole leaves) or all there are, walking only that area's leaves."""
        parts = []
        found = 0
        for top in self._area_tops.get(area, ()):
            row = self._rows[top]
            lo = np.flatnonzero(self._leaves[row])
            parts.append(((top & 0xFFFFFFFF) << LEAF_BITS) + lo)
            found += len(lo)
            if limit is not None and found >= limit:
                break
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(parts).astype(np.int64)
