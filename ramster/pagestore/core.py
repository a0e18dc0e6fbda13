"""The pool's core: slot metadata as a struct of numpy arrays, the radix index, the slab
allocator, and the primitives every operation is built from (reserve and commit slots, free
them, look keys up). No page is a Python object here; batches of up to SMALL_BATCH keys take
plain-int twins of the vectorised paths, with exactly the same effects."""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ramster.pagestore.codec import EMPTY, LZ4, RAW, REMOTE, SAME, checksum
from ramster.pagestore.config import MAX_AREA, PoolConfig
from ramster.pagestore.index import RadixIndex
from ramster.pagestore.slab import SlabAllocator

log = logging.getLogger(__name__)

TICK_LIMIT = (1 << 32) - 2
INITIAL_SLOTS = 64
META_FIELDS: tuple[tuple[str, type[np.generic]], ...] = (
    ("version", np.uint64),
    ("handle", np.uint64),  # slab handle, or the 8-byte pattern of a same-filled page
    ("checksum", np.uint64),  # xxh3-64 of the uncompressed page
    ("tick", np.uint32),  # last store or load, for cold-first order
    ("offset", np.uint32),
    ("length", np.uint16),  # lz4 length; raw blobs are a whole page
    ("area", np.uint16),
    ("kind", np.uint8),
)
SLOT_BYTES = sum(np.dtype(t).itemsize for _, t in META_FIELDS)
COMPACT_STEP = 2048
"""Objects one store may move while compacting (about 4 MiB of copies at most): the store path
pays a bounded pause; the rest waits for the next store."""
SMALL_BATCH = 64
"""Batches up to this many keys go through plain-int loops: numpy's fixed cost per call (about
1 µs an operation, dozens of operations a batch) outweighs its speed until batches are larger."""

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
Keys = I64 | list[int]
"""Offsets of one batch: plain ints up to SMALL_BATCH keys, an int64 array beyond."""


def _keys(offsets: Sequence[int] | I64) -> Keys:
    if len(offsets) <= SMALL_BATCH:
        if isinstance(offsets, np.ndarray):
            return offsets.tolist()  # type: ignore[no-any-return]
        return [int(o) for o in offsets]
    return np.asarray(offsets, dtype=np.int64)


@dataclass(slots=True)
class _Put:
    """One store batch in progress: reserved slots and what has been kept so far."""

    slots: list[int]
    base: int  # metadata and index bytes once the batch is committed
    done_i: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    handles: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    sums: list[int] = field(default_factory=list)


class PoolCore:
    """The state of a pool and its primitives; PagePool adds the operations (see pool.py)."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config = config or PoolConfig()
        self._ps = config.page_size
        self._alloc = SlabAllocator(self._ps, max(16, self._ps // 128))
        self._index = RadixIndex()
        self._cap = 0
        self._meta: dict[str, npt.NDArray[np.generic]] = {}
        self._mv: dict[str, memoryview] = {}  # the same arrays, for item access by plain ints
        self._free_slots = array("I")
        self._hw = 1  # slots below this were used at least once; slot 0 means "absent"
        self._grow(INITIAL_SLOTS)
        self._tick = 1
        self._full = False
        self._zero_page = bytes(self._ps)
        self._zero_sum = checksum(self._zero_page)
        self._stored = 0
        self._futile_at = 0  # fragmented bytes at the last compaction that moved nothing
        self._area_pages: dict[int, int] = {}  # area -> keys present (local or remote)
        self._set_counts: dict[int, int] = {}  # holder set -> remote-only pages in it
        self._same = 0
        self._huge = 0
        self._compr = 0
        self._remote = 0
        self._remote_drops: list[tuple[int, int, int, int]] = []
        self._eph_table = np.zeros(MAX_AREA + 1, dtype=bool)  # area -> ephemeral? (numpy masks)
        self._eph_areas: set[int] = set()  # the same, for plain-int checks
        self._eph_pages = 0
        self._eph_bytes = 0
        self._c: dict[str, int] = dict.fromkeys(
            (
                "reject_pool_limit",
                "reject_compress_poor",
                "succ_stores",
                "failed_stores",
                "loads",
                "exclusive_loads",
                "invalidates",
                "checksum_failures",
                "compactions",
                "pages_compacted",
                "evicts",
            ),
            0,
        )

    def _meta_bytes(self) -> int:
        # Each slot's free-list entry (4 bytes) is counted whether the slot is free or not:
        # a drop moves a slot onto the free list, and must never push the pool past its budget.
        return self._cap * (SLOT_BYTES + 4) + self._index.nbytes

    @property
    def full(self) -> bool:
        """True while the pool refuses stores (budget hit, not yet below the threshold)."""
        return self._full

    def _end_full_below_threshold(self) -> None:
        """The hysteresis: a full pool accepts again once below the accept threshold. Checked
        by every put and every free: a holder that drained must say it has room again, or no
        owner chooses it and no put ever comes to clear it."""
        if self._full and self.used_bytes <= self.config.accept_bytes:
            self._full = False
            log.info("pool below accept threshold again: accepting stores")

    @property
    def used_bytes(self) -> int:
        """What the pool costs in RAM right now (the budgeted figure)."""
        return self._meta_bytes() + self._alloc.resident_bytes

    def _grow(self, new_cap: int) -> None:
        """Resize the slot arrays to exactly new_cap slots (callers check the budget)."""
        for name, dtype in META_FIELDS:
            arr = np.zeros(new_cap, dtype=dtype)
            if self._cap:
                arr[: self._cap] = self._meta[name]
            self._meta[name] = arr
            self._mv[name] = arr.data
        self._cap = new_cap

    def _take_slots(self, n: int, headroom: int) -> list[int]:
        """Up to n free slot numbers, growing the metadata only within `headroom` bytes."""
        if n <= 0:
            return []
        free = self._free_slots
        take = free[-n:].tolist() if n <= len(free) else free.tolist()
        del free[len(free) - len(take) :]
        missing = n - len(take)
        if missing:
            if self._hw + missing > self._cap:
                # A slot costs its fields and its free-list entry (see _meta_bytes).
                room = max(0, headroom) // (SLOT_BYTES + 4)
                # Grow by a quarter at least (amortised copies), never past the budget.
                step = max(self._hw + missing - self._cap, INITIAL_SLOTS, self._cap // 4)
                target = self._cap + min(step, room)
                if target > self._cap:
                    self._grow(target)
                missing = min(missing, self._cap - self._hw)
            take.extend(range(self._hw, self._hw + missing))
            self._hw += missing
        return take

    def _growth(self, area: int, offs: Keys) -> int:
        if isinstance(offs, list):
            return self._index.growth_bytes_small(area, offs)
        return self._index.growth_bytes(area, offs)

    def _lookup(self, area: int, offs: Keys) -> list[int] | I32:
        if isinstance(offs, list):
            return (
                self._index.lookup_small(area, offs)
                if self._index.has_area(area)
                else [0] * len(offs)
            )
        return self._index.lookup(area, offs)

    def _columns(self, slots: list[int] | I32, *names: str) -> list[list[int]]:
        """Metadata fields of the given slots, as lists of plain ints."""
        if isinstance(slots, list):
            return [[mv[s] for s in slots] for mv in (self._mv[name] for name in names)]
        return [self._meta[name][slots].tolist() for name in names]

    def _touch(self, slots: list[int] | I32) -> None:
        """Stamp the slots with a new tick (slot 0 is never live: writing it is harmless)."""
        self._tick_once()
        tick = self._tick
        if isinstance(slots, list):
            mv = self._mv["tick"]
            for s in slots:
                mv[s] = tick
        else:
            self._meta["tick"][slots] = tick

    def _commit(
        self, area: int, offs: Keys, versions: Sequence[int], put: _Put, remote: bool = False
    ) -> None:
        used = len(put.done_i)
        if isinstance(offs, list):
            self._commit_small(area, offs, versions, put)
        else:
            m = self._meta
            sl = np.asarray(put.slots[:used], dtype=np.int64)
            idx = np.asarray(put.done_i, dtype=np.int64)
            key_offs = offs[idx]
            m["version"][sl] = np.asarray(versions, dtype=np.uint64)[idx]
            m["handle"][sl] = np.asarray(put.handles, dtype=np.uint64)
            m["checksum"][sl] = np.asarray(put.sums, dtype=np.uint64)
            m["tick"][sl] = self._tick
            m["offset"][sl] = key_offs
            m["length"][sl] = np.asarray(put.lengths, dtype=np.uint16)
            m["area"][sl] = area
            m["kind"][sl] = np.asarray(put.kinds, dtype=np.uint8)
            self._index.assign(area, key_offs, sl.astype(np.int32))
        self._area_pages[area] = self._area_pages.get(area, 0) + used
        if remote:
            self._remote += used
            if used:
                sets = self._set_counts
                for h in put.handles[:used]:
                    sets[h] = sets.get(h, 0) + 1
            return
        raw = put.kinds.count(RAW)
        self._stored += used
        self._same += put.kinds.count(SAME)
        self._huge += raw
        compr = sum(put.lengths) + raw * self._ps
        self._compr += compr
        if area in self._eph_areas:
            self._eph_pages += used
            self._eph_bytes += compr

    def _commit_small(self, area: int, offs: list[int], versions: Sequence[int], put: _Put) -> None:
        mv = self._mv
        version, handle, checksum_, tick, offset, length, area_, kind = (
            mv[name] for name, _ in META_FIELDS
        )
        now = self._tick
        slots = put.slots[: len(put.done_i)]
        key_offs = [offs[i] for i in put.done_i]
        rows = zip(
            slots, put.done_i, key_offs, put.handles, put.sums, put.lengths, put.kinds, strict=True
        )
        for slot, i, off, h, s, n, k in rows:
            version[slot] = versions[i]
            handle[slot] = h
            checksum_[slot] = s
            tick[slot] = now
            offset[slot] = off
            length[slot] = n
            area_[slot] = area
            kind[slot] = k
        self._index.assign_small(area, key_offs, slots)

    def _drop_present(self, area: int, offs: Keys) -> int:
        if not self._index.has_area(area):
            return 0
        if isinstance(offs, list):
            found = self._index.lookup_small(area, offs)
            live = [s for s in found if s]
            if live:
                if len(live) < len(found):
                    offs = [o for o, s in zip(offs, found, strict=True) if s]
                self._free_small(area, offs, live)
            return len(live)
        slots = self._index.lookup(area, offs)
        present = slots > 0
        if not present.any():
            return 0
        self._free(area, offs[present], slots[present])
        return int(np.count_nonzero(present))

    def _free(
        self, area: int, offs: I64, slots: npt.NDArray[np.int32], record_remote: bool = True
    ) -> None:
        m = self._meta
        kinds = m["kind"][slots]
        blob = (kinds == LZ4) | (kinds == RAW)
        free = self._alloc.free
        for h in m["handle"][slots[blob]].tolist():
            free(h)
        self._less_in_area(area, len(slots))
        remote = kinds == REMOTE
        n_remote = int(np.count_nonzero(remote))
        if n_remote:
            self._remote -= n_remote
            self._less_in_sets(m["handle"][slots[remote]].tolist())
            if record_remote:
                self._remote_drops.extend(
                    zip(
                        m["handle"][slots[remote]].tolist(),
                        [area] * n_remote,
                        offs[remote].tolist(),
                        m["version"][slots[remote]].tolist(),
                        strict=True,
                    )
                )
            keep = ~remote
            slots_local = slots[keep]
        else:
            slots_local = slots
        kinds = m["kind"][slots_local]
        self._stored -= len(slots_local)
        self._same -= int(np.count_nonzero(kinds == SAME))
        raw = int(np.count_nonzero(kinds == RAW))
        self._huge -= raw
        compr = int(m["length"][slots_local].sum(dtype=np.int64)) + raw * self._ps
        self._compr -= compr
        if area in self._eph_areas:
            self._eph_pages -= len(slots_local)
            self._eph_bytes -= compr
        m["kind"][slots] = EMPTY
        self._index.remove(area, offs)
        self._free_slots.extend(slots.tolist())
        self._end_full_below_threshold()

    def _free_small(
        self, area: int, offs: list[int], slots: list[int], record_remote: bool = True
    ) -> None:
        """`_free` for a few keys as plain ints, freeing and counting in the same order."""
        mv = self._mv
        kind, handle, length = mv["kind"], mv["handle"], mv["length"]
        free = self._alloc.free
        remote_drops = self._remote_drops
        ps = self._ps
        stored, compr = self._stored, self._compr
        self._less_in_area(area, len(slots))
        for off, slot in zip(offs, slots, strict=True):
            k = kind[slot]
            if k == REMOTE:
                self._remote -= 1
                self._less_in_sets([handle[slot]])
                if record_remote:
                    remote_drops.append((handle[slot], area, off, mv["version"][slot]))
            else:
                if k in (LZ4, RAW):
                    free(handle[slot])
                self._stored -= 1
                if k == SAME:
                    self._same -= 1
                elif k == RAW:
                    self._huge -= 1
                    self._compr -= ps
                self._compr -= length[slot]
            kind[slot] = EMPTY
        if area in self._eph_areas:
            self._eph_pages -= stored - self._stored
            self._eph_bytes -= compr - self._compr
        self._index.remove_small(area, offs)
        self._free_slots.extend(slots)
        self._end_full_below_threshold()

    def _less_in_area(self, area: int, n: int) -> None:
        left = self._area_pages.get(area, 0) - n
        if left > 0:
            self._area_pages[area] = left
        else:
            self._area_pages.pop(area, None)

    def _less_in_sets(self, set_ids: list[int]) -> None:
        sets = self._set_counts
        for h in set_ids:
            left = sets[h] - 1
            if left:
                sets[h] = left
            else:
                del sets[h]

    def _more_in_sets(self, set_ids: list[int]) -> None:
        sets = self._set_counts
        for h in set_ids:
            sets[h] = sets.get(h, 0) + 1

    def _tick_once(self) -> None:
        self._tick += 1
        if self._tick >= TICK_LIMIT:
            # Keep the order, squeeze the values: ranks fit easily in 32 bits.
            tick = self._meta["tick"][: self._hw]
            _, ranks = np.unique(tick, return_inverse=True)
            tick[:] = ranks.astype(np.uint32) + 1
            self._tick = int(tick.max()) + 1

    def compact(self, max_moves: int | None = None) -> int:
        """Move blobs out of sparse slabs so that those slabs return to the OS; returns moves
        (at most about max_moves, when given)."""
        moves = self._alloc.compact(max_moves)
        if moves:
            handle = self._meta["handle"]
            for slot, new_handle in moves:
                handle[slot] = new_handle
            self._c["compactions"] += 1
            self._c["pages_compacted"] += len(moves)
        return len(moves)
