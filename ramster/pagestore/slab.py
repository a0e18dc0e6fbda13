"""Size-class slab allocator for compressed blobs, in the manner of zsmalloc.

Blobs of similar size share fixed-size slabs carved from anonymous mmap chunks, faulted in
whole when made (one madvise instead of a page fault per page). A slab whose
last object is freed is handed back to the kernel with MADV_DONTNEED, so freeing pages really
returns memory; `compact()` moves objects out of sparse slabs so that they can be released.
No I/O, no locks: the pool that owns an allocator is its only user.
"""

from __future__ import annotations

import mmap
from array import array
from dataclasses import dataclass

OS_PAGE = mmap.PAGESIZE
CHUNK_BYTES = 4 << 20
"""Address space is reserved in 4 MiB mappings; only touched pages cost RSS."""
MAX_EXTRA_SLAB_PAGES = 8
"""A slab spans at most this many OS pages beyond the minimum: enough to make waste small."""
MADV_POPULATE_WRITE = 23  # Linux 5.14+; not exported by the mmap module
MIN_OBJS = 8
OBJ_BITS = 16
OBJ_MASK = (1 << OBJ_BITS) - 1


@dataclass(frozen=True, slots=True)
class SlabStatistics:
    """What the allocator holds right now, in bytes and counts."""

    classes: int
    slabs: int
    objects: int
    object_bytes: int
    """Sum of the class sizes of live objects (payload plus rounding inside a class)."""
    resident_bytes: int
    """Bytes of live slabs (faulted in whole when made): what the slabs really cost in RAM."""
    bookkeeping_bytes: int
    """Per-object owner records and free lists."""
    mapped_bytes: int
    """Address space reserved (not RAM: untouched or released pages cost nothing)."""


class _SizeClass:
    __slots__ = ("current", "index", "objs_per_slab", "pages_per_slab", "partial", "size")

    def __init__(self, index: int, size: int, pages_per_slab: int) -> None:
        self.index = index
        self.size = size
        self.pages_per_slab = pages_per_slab
        self.objs_per_slab = min(pages_per_slab * OS_PAGE // size, OBJ_MASK + 1)
        self.current: _Slab | None = None  # where new objects go until it is full
        self.partial: dict[int, _Slab] = {}  # other slabs with a free object


class _Slab:
    __slots__ = ("buf", "cls", "free", "hwm", "ident", "live", "owners", "range_start", "size")

    def __init__(self, ident: int, cls: _SizeClass, buf: memoryview, range_start: int) -> None:
        self.ident = ident
        self.cls = cls
        self.size = cls.size
        self.buf = buf
        self.range_start = range_start
        self.free = array("H")  # freed object indices below hwm
        self.hwm = 0  # objects at or above hwm were never touched
        self.live = 0
        self.owners = array("I", bytes(4 * cls.objs_per_slab))

    def resident_bytes(self) -> int:
        # The whole span is faulted in when the slab is made (MADV_POPULATE_WRITE).
        return self.cls.pages_per_slab * OS_PAGE


def _pages_per_slab(size: int) -> int:
    """The slab length (in OS pages) that wastes the least space at its tail for `size` objects."""
    # At least MIN_OBJS objects a slab: creating slabs is the slow path, and untouched pages
    # at a slab's end cost no RAM.
    least = -(-size * MIN_OBJS // OS_PAGE)
    best, best_waste = least, 1.0
    for pages in range(least, least + MAX_EXTRA_SLAB_PAGES + 1):
        span = pages * OS_PAGE
        waste = (span % size) / span
        if waste < best_waste - 1e-9:
            best, best_waste = pages, waste
    return best


class SlabAllocator:
    """Allocate, read and free blobs of 1..`max_size` bytes; handles are plain ints."""

    def __init__(self, max_size: int, class_delta: int) -> None:
        if max_size <= 0 or class_delta <= 0 or max_size % class_delta:
            raise ValueError("max_size must be a positive multiple of class_delta")
        self.max_size = max_size
        self.class_delta = class_delta
        self._classes = [
            _SizeClass(i, size, _pages_per_slab(size))
            for i, size in enumerate(range(class_delta, max_size + 1, class_delta))
        ]
        self._slabs: list[_Slab | None] = []
        self._free_ids: list[int] = []
        self._chunks: list[mmap.mmap] = []
        self._chunk_views: list[memoryview] = []
        self._carve_at = CHUNK_BYTES  # next free byte in the newest chunk; starts "full"
        self._free_ranges: dict[int, list[tuple[int, int]]] = {}  # pages -> [(chunk, start)]
        self._populate = True
        self._resident = 0
        self._objects = 0
        self._object_bytes = 0
        self._bookkeeping = 0
        self._free_entries = 0
        """Entries in every slab's free list (2 bytes each): kept, so statistics never scan."""
        self._live_slabs = 0

    # -- sizes ---------------------------------------------------------------------------------

    def class_size(self, nbytes: int) -> int:
        """Bytes an object of `nbytes` really occupies."""
        return self._classes[(nbytes - 1) // self.class_delta].size

    @property
    def resident_bytes(self) -> int:
        """RAM held by live slabs plus their bookkeeping."""
        return self._resident + self._bookkeeping

    # -- objects -------------------------------------------------------------------------------

    def alloc(self, data: bytes | bytearray | memoryview, owner: int, limit: int = 1 << 62) -> int:
        """Copy `data` into a new object owned by slot `owner`; returns its handle.

        Returns -1, changing nothing, if `resident_bytes` would end above `limit`.
        """
        if self._resident + self._bookkeeping > limit:
            # Already above it (the caller's other costs grew: index rows, slots): a free
            # object in a slab held is no room either.
            return -1
        n = len(data)
        cls = self._classes[(n - 1) // self.class_delta]
        slab = cls.current
        if slab is None or slab.live == cls.objs_per_slab:
            if cls.partial:
                _, slab = cls.partial.popitem()
            else:
                cost = cls.pages_per_slab * OS_PAGE + 4 * cls.objs_per_slab
                if self._resident + self._bookkeeping + cost > limit:
                    return -1
                slab = self._new_slab(cls)
            cls.current = slab
        if slab.free:
            idx = slab.free.pop()
            self._free_entries -= 1
        else:
            idx = slab.hwm
            slab.hwm = idx + 1
        slab.live += 1
        start = idx * cls.size
        slab.buf[start : start + n] = data
        slab.owners[idx] = owner
        self._objects += 1
        self._object_bytes += cls.size
        return (slab.ident << OBJ_BITS) | idx

    def view(self, handle: int, nbytes: int) -> memoryview:
        """The first `nbytes` of an object, without copying (valid until it is freed or moved)."""
        slab = self._slabs[handle >> OBJ_BITS]
        assert slab is not None
        start = (handle & OBJ_MASK) * slab.cls.size
        return slab.buf[start : start + nbytes]

    def table(self) -> list[_Slab | None]:
        """The slab table, for readers that resolve many handles in a tight loop."""
        return self._slabs

    def free(self, handle: int) -> None:
        """Release an object; its slab goes back to the kernel when it empties."""
        slab = self._slabs[handle >> OBJ_BITS]
        assert slab is not None
        cls = slab.cls
        was_full = slab.live == cls.objs_per_slab
        slab.live -= 1
        self._objects -= 1
        self._object_bytes -= cls.size
        if slab.live == 0:
            if cls.current is slab:
                cls.current = None
            cls.partial.pop(slab.ident, None)
            self._release(slab)
            return
        slab.free.append(handle & OBJ_MASK)
        self._free_entries += 1
        if was_full and cls.current is not slab:
            cls.partial[slab.ident] = slab

    def corrupt_for_test(self, handle: int, at: int) -> None:
        """Flip one byte of an object in place (used by corruption tests only)."""
        slab = self._slabs[handle >> OBJ_BITS]
        assert slab is not None
        pos = (handle & OBJ_MASK) * slab.cls.size + at
        slab.buf[pos] ^= 0xFF

    # -- compaction ----------------------------------------------------------------------------

    def fragmented_bytes(self) -> int:
        """Resident bytes not holding live objects (what compaction could win back, at most)."""
        return max(0, self._resident - self._object_bytes)

    def compact(self, max_moves: int | None = None) -> list[tuple[int, int]]:
        """Empty the sparsest slabs of each class; returns (owner, new handle) per move. With
        max_moves, stops after the slab that reaches it: a bounded pause per call, the rest
        for the next call."""
        moves: list[tuple[int, int]] = []
        for cls in self._classes:
            if max_moves is not None and len(moves) >= max_moves:
                break
            cands = list(cls.partial.values())
            if cls.current is not None and cls.current.live < cls.objs_per_slab:
                cands.append(cls.current)
            if len(cands) < 2:
                continue
            free_objs = sum(cls.objs_per_slab - s.live for s in cands)
            for donor in sorted(cands, key=lambda s: s.live):
                free_elsewhere = free_objs - (cls.objs_per_slab - donor.live)
                if free_elsewhere < donor.live:
                    break
                moves.extend(self._drain_slab(donor, cls))
                free_objs = free_elsewhere - donor.live
                if max_moves is not None and len(moves) >= max_moves:
                    break
        return moves

    def _drain_slab(self, donor: _Slab, cls: _SizeClass) -> list[tuple[int, int]]:
        moves = []
        freed = set(donor.free)
        live_idx = [i for i in range(donor.hwm) if i not in freed]
        # Keep the donor out of reach so that alloc() never moves an object into it.
        cls.partial.pop(donor.ident, None)
        if cls.current is donor:
            cls.current = None
        for idx in live_idx:
            start = idx * cls.size
            data = bytes(donor.buf[start : start + cls.size])
            owner = donor.owners[idx]
            new_handle = self.alloc(data, owner)
            moves.append((owner, new_handle))
            self.free((donor.ident << OBJ_BITS) | idx)
        return moves

    # -- slabs ---------------------------------------------------------------------------------

    def _new_slab(self, cls: _SizeClass) -> _Slab:
        pages = cls.pages_per_slab
        span = pages * OS_PAGE
        ranges = self._free_ranges.get(pages)
        if ranges:
            chunk, start = ranges.pop()
        else:
            if self._carve_at + span > CHUNK_BYTES:
                self._chunks.append(mmap.mmap(-1, CHUNK_BYTES))
                self._chunk_views.append(memoryview(self._chunks[-1]))
                self._carve_at = 0
            chunk, start = len(self._chunks) - 1, self._carve_at
            self._carve_at += span
        if self._populate:
            # One syscall faults the slab in, instead of one page fault per page touched.
            try:
                self._chunks[chunk].madvise(MADV_POPULATE_WRITE, start, span)
            except OSError:
                self._populate = False
        ident = self._free_ids.pop() if self._free_ids else len(self._slabs)
        buf = self._chunk_views[chunk][start : start + span]
        slab = _Slab(ident, cls, buf, (chunk << 32) | start)
        if ident == len(self._slabs):
            self._slabs.append(slab)
        else:
            self._slabs[ident] = slab
        self._bookkeeping += 4 * cls.objs_per_slab
        self._resident += slab.resident_bytes()
        self._live_slabs += 1
        return slab

    def _release(self, slab: _Slab) -> None:
        cls = slab.cls
        chunk, start = slab.range_start >> 32, slab.range_start & 0xFFFFFFFF
        span = cls.pages_per_slab * OS_PAGE
        self._resident -= slab.resident_bytes()
        self._bookkeeping -= 4 * cls.objs_per_slab
        self._free_entries -= len(slab.free)
        self._live_slabs -= 1
        slab.buf.release()
        self._chunks[chunk].madvise(mmap.MADV_DONTNEED, start, span)
        self._free_ranges.setdefault(cls.pages_per_slab, []).append((chunk, start))
        self._slabs[slab.ident] = None
        self._free_ids.append(slab.ident)

    def statistics(self) -> SlabStatistics:
        """A snapshot of the allocator's counters (running counts: no scan of the slabs)."""
        return SlabStatistics(
            classes=len(self._classes),
            slabs=self._live_slabs,
            objects=self._objects,
            object_bytes=self._object_bytes,
            resident_bytes=self._resident,
            bookkeeping_bytes=self._bookkeeping + 2 * self._free_entries,
            mapped_bytes=len(self._chunks) * CHUNK_BYTES,
        )
