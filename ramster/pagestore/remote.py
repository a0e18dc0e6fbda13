"""Pages that live on remote holders only: the owner keeps their slot (version, checksum,
holder-set number) and queues a drop for every such page it forgets."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ramster.pagestore.codec import EMPTY, LZ4, RAW, REMOTE, SAME
from ramster.pagestore.core import I64, PoolCore, _keys, _Put
from ramster.pagestore.index import LEAF_MASK

U64 = npt.NDArray[np.uint64]


class RemoteEntries(PoolCore):
    """Remote-only entries of a pool: record, move and query where spilled pages went."""

    def mark_remote(
        self, area: int, offsets: Sequence[int] | I64, versions: Sequence[int], holder_set: int
    ) -> list[bool]:
        """Free the local copies of pages now held remotely, where the version still matches.

        A key stored again since it was handed out keeps its newer local copy (False).
        """
        offs = np.asarray(offsets, dtype=np.int64)
        slots = self._index.lookup(area, offs)
        m = self._meta
        kinds = m["kind"][slots].astype(np.uint8, copy=False)
        same_version = m["version"][slots] == np.asarray(versions, dtype=np.uint64)
        ok = (slots > 0) & (kinds >= SAME) & (kinds <= RAW) & same_version
        if not ok.any():
            return ok.tolist()  # type: ignore[no-any-return]
        sl = slots[ok]
        k = kinds[ok]
        for h in m["handle"][sl[(k == LZ4) | (k == RAW)]].tolist():
            self._alloc.free(h)
        raw = int(np.count_nonzero(k == RAW))
        self._stored -= len(sl)
        self._same -= int(np.count_nonzero(k == SAME))
        self._huge -= raw
        compr = int(m["length"][sl].sum(dtype=np.int64)) + raw * self._ps
        self._compr -= compr
        if area in self._eph_areas:
            self._eph_pages -= len(sl)
            self._eph_bytes -= compr
        self._remote += len(sl)
        self._set_counts[holder_set] = self._set_counts.get(holder_set, 0) + len(sl)
        m["kind"][sl] = REMOTE
        m["handle"][sl] = holder_set
        return ok.tolist()  # type: ignore[no-any-return]

    def put_remote(
        self,
        area: int,
        offsets: Sequence[int] | I64,
        versions: Sequence[int],
        checksums: Sequence[int],
        holder_set: int,
    ) -> list[bool]:
        """Record pages stored straight on remote holders (metadata only, within the budget).

        Not subject to the accept hysteresis: a full pool still records where its pages went,
        as long as the metadata itself fits.
        """
        offs = _keys(offsets)
        self._drop_present(area, offs)
        self._tick_once()
        budget = self.config.budget_bytes
        index_growth = self._growth(area, offs)
        slots = self._take_slots(len(offs), budget - self.used_bytes - index_growth)
        base = self._meta_bytes() + index_growth
        if base + self._alloc.resident_bytes > budget:
            self._free_slots.extend(slots)
            slots = []
        put = _Put(slots, base)
        for i in range(len(slots)):
            put.done_i.append(i)
            put.kinds.append(REMOTE)
            put.handles.append(holder_set)
            put.lengths.append(0)
            put.sums.append(checksums[i])
        self._free_slots.extend(slots[len(put.done_i) :])
        if put.done_i:
            self._commit(area, offs, versions, put, remote=True)
        ok = [False] * len(offs)
        for i in put.done_i:
            ok[i] = True
        return ok

    def remote_entries(
        self, area: int, offsets: Sequence[int] | I64
    ) -> list[tuple[int, int, int, int]]:
        """(index in offsets, version, checksum, holder set) of the keys held remotely only."""
        offs = _keys(offsets)
        slots = self._lookup(area, offs)
        if isinstance(slots, list):
            kind = self._mv["kind"]
            where_ = [i for i, s in enumerate(slots) if kind[s] == REMOTE]
            sl_ = [slots[i] for i in where_]
            return list(
                zip(where_, *self._columns(sl_, "version", "checksum", "handle"), strict=True)
            )
        m = self._meta
        where = np.flatnonzero(m["kind"][slots] == REMOTE)
        if not len(where):
            return []
        sl = slots[where]
        return list(
            zip(
                where.tolist(),
                m["version"][sl].tolist(),
                m["checksum"][sl].tolist(),
                m["handle"][sl].tolist(),
                strict=True,
            )
        )

    def area_counts(self) -> dict[int, tuple[int, int]]:
        """area -> (pages kept here, pages kept only on remote holders)."""
        m = self._meta
        kinds = m["kind"][: self._hw]
        areas = m["area"][: self._hw]
        out: dict[int, tuple[int, int]] = {}
        local = np.bincount(areas[(kinds != EMPTY) & (kinds != REMOTE)])
        remote = np.bincount(areas[kinds == REMOTE])
        for area in np.flatnonzero(local).tolist() + np.flatnonzero(remote).tolist():
            out[area] = (
                int(local[area]) if area < len(local) else 0,
                int(remote[area]) if area < len(remote) else 0,
            )
        return out

    def remote_count_in_sets(self, set_ids: Sequence[int]) -> int:
        """How many remote pages are in any of the sets (kept counts: no scan)."""
        counts = self._set_counts
        return sum(counts.get(i, 0) for i in set(set_ids))

    def remote_in_sets(self, set_ids: Sequence[int]) -> list[tuple[int, int, int, int, int]]:
        """(area, offset, version, checksum, holder set) of remote pages in any of the sets."""
        m = self._meta
        kinds = m["kind"][: self._hw].astype(np.uint8, copy=False)
        handles = m["handle"][: self._hw]
        hit = (kinds == REMOTE) & np.isin(handles, np.asarray(set_ids, dtype=np.uint64))
        sl = np.flatnonzero(hit)
        return list(
            zip(
                m["area"][sl].tolist(),
                m["offset"][sl].tolist(),
                m["version"][sl].tolist(),
                m["checksum"][sl].tolist(),
                m["handle"][sl].tolist(),
                strict=True,
            )
        )

    def remote_set_counts(self) -> dict[int, int]:
        """Remote pages per holder-set number (kept counts: no scan)."""
        return dict(self._set_counts)

    def move_remote(
        self,
        area: int,
        offsets: Sequence[int],
        versions: Sequence[int],
        old_set: int,
        new_set: int,
    ) -> list[bool]:
        """Point remote pages at a new holder set, where version and old set still match."""
        offs = np.asarray(offsets, dtype=np.int64)
        slots = self._index.lookup(area, offs)
        m = self._meta
        ok = (
            (slots > 0)
            & (m["kind"][slots] == REMOTE)
            & (m["handle"][slots] == np.uint64(old_set))
            & (m["version"][slots] == np.asarray(versions, dtype=np.uint64))
        )
        moved = int(np.count_nonzero(ok))
        if moved and old_set != new_set:
            self._set_counts[new_set] = self._set_counts.get(new_set, 0) + moved
            left = self._set_counts[old_set] - moved
            if left:
                self._set_counts[old_set] = left
            else:
                del self._set_counts[old_set]
        m["handle"][slots[ok]] = new_set
        return ok.tolist()  # type: ignore[no-any-return]

    def held_meta(self, area: int, start: int, limit: int) -> tuple[I64, U64, U64]:
        """(offsets, versions, checksums) of up to `limit` keys of an area from `start` on, in
        ascending offset order: an inventory, a batch at a time, without the payloads."""
        # Leaf by leaf from `start`: the work is bounded by `limit`, not by the area's size.
        index = self._index
        leaves = index.area_leaves(area)
        parts = []
        found = 0
        for first in leaves[bisect.bisect_left(leaves, start - (start & LEAF_MASK)) :]:
            leaf = index.leaf_offsets(area, first)
            leaf = leaf[leaf >= start]
            parts.append(leaf)
            found += len(leaf)
            if found >= limit:
                break
        offs = np.concatenate(parts)[:limit] if parts else np.zeros(0, dtype=np.int64)
        slots = self._index.lookup(area, offs)
        m = self._meta
        versions: U64 = m["version"][slots].astype(np.uint64)
        sums: U64 = m["checksum"][slots].astype(np.uint64)
        return offs, versions, sums

    def drain_remote_drops(self) -> list[tuple[int, int, int, int]]:
        """(holder set, area, offset, version) of remote copies forgotten since the last call."""
        drops, self._remote_drops = self._remote_drops, []
        return drops
