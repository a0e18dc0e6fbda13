"""The compressed page pool: same-filled detection, lz4, slabs, budget, versions, checksums."""

from __future__ import annotations

import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lz4.block
import numpy as np
import numpy.typing as npt
import xxhash

from ramster.errors import CorruptPage
from ramster.pagestore.config import PoolConfig
from ramster.pagestore.index import RadixIndex
from ramster.pagestore.slab import OBJ_BITS, OBJ_MASK, SlabAllocator

log = logging.getLogger(__name__)

EMPTY, SAME, LZ4, RAW, REMOTE = 0, 1, 2, 3, 4
"""Slot kinds: free, same-filled (8-byte pattern in `handle`), lz4 blob, raw blob, and a page
that lives on remote holders only (`handle` is the caller's holder-set number)."""
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


def checksum(page: bytes | bytearray | memoryview) -> int:
    """The checksum every copy of a page carries: xxh3-64 of its uncompressed bytes."""
    return int(xxhash.xxh3_64_intdigest(page))


def stored_kind(length: int, page_size: int) -> int:
    """How a stored payload is encoded, from its length: 8 bytes is a same-filled pattern, a
    whole page is raw, anything else is an lz4 block (never 8 bytes or a whole page long)."""
    if length == 8:
        return SAME
    if length == page_size:
        return RAW
    return LZ4


def expand(payload: bytes | bytearray | memoryview, page_size: int) -> bytes:
    """The page a stored payload stands for (checksum not verified here)."""
    kind = stored_kind(len(payload), page_size)
    if kind == SAME:
        return bytes(payload) * (page_size // 8)
    if kind == RAW:
        return bytes(payload)
    try:
        page: bytes = lz4.block.decompress(payload, uncompressed_size=page_size)
    except lz4.block.LZ4BlockError:
        return b""
    return page


def encode(page: bytes | bytearray, config: PoolConfig) -> bytes:
    """A page in stored form, as the pool would keep it: pattern, lz4 block or raw page."""
    word = bytes(page[:8])
    if page[8:16] == word and page[8:] == page[:-8]:
        return word
    packed: bytes = lz4.block.compress(page, store_size=False)
    return packed if len(packed) <= config.compress_limit else bytes(page)


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


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """Counters named after zswap and zram so that results compare."""

    stored_pages: int
    """Pages kept in this pool (not counting those recorded as remote)."""
    remote_pages: int
    """Pages whose only copies are on remote holders (metadata kept here)."""
    same_filled_pages: int
    huge_pages: int
    orig_data_size: int
    compr_data_size: int
    pool_total_size: int
    pool_limit: int
    metadata_size: int
    reject_pool_limit: int
    reject_compress_poor: int
    succ_stores: int
    failed_stores: int
    loads: int
    exclusive_loads: int
    invalidates: int
    checksum_failures: int
    compactions: int
    pages_compacted: int
    full: bool


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


class PagePool:
    """Pages by (area, offset), compressed in RAM within a byte budget; no I/O, not thread-safe."""

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
        self._same = 0
        self._huge = 0
        self._compr = 0
        self._remote = 0
        self._remote_drops: list[tuple[int, int, int, int]] = []
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
            ),
            0,
        )

    # -- accounting ----------------------------------------------------------------------------

    def _meta_bytes(self) -> int:
        return self._cap * SLOT_BYTES + 4 * len(self._free_slots) + self._index.nbytes

    @property
    def full(self) -> bool:
        """True while the pool refuses stores (budget hit, not yet below the threshold)."""
        return self._full

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
                # A new slot may end up on the free list (4 more bytes) if its page is refused.
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

    # -- stores --------------------------------------------------------------------------------

    def _growth(self, area: int, offs: Keys) -> int:
        if isinstance(offs, list):
            return self._index.growth_bytes_small(area, offs)
        return self._index.growth_bytes(area, offs)

    def _begin_put(self, area: int, offs: Keys) -> _Put | None:
        """Drop old copies, apply the hysteresis, reserve slots; None when the pool is full."""
        n = len(offs)
        self._drop_present(area, offs)
        self._tick_once()
        cfg = self.config
        budget = cfg.budget_bytes
        if self._full and self.used_bytes <= cfg.accept_bytes:
            self._full = False
            log.info("pool below accept threshold again: accepting stores")
        if self.used_bytes > cfg.accept_bytes and self._alloc.fragmented_bytes() >= max(
            256 << 10, budget // 20
        ):
            self.compact()
        if self._full:
            self._c["reject_pool_limit"] += n
            self._c["failed_stores"] += n
            return None
        index_growth = self._growth(area, offs)
        slots = self._take_slots(n, budget - self.used_bytes - index_growth)
        # Unused slots go back on the free list (4 bytes each): count them as if they had.
        return _Put(slots, self._meta_bytes() + index_growth + 4 * len(slots))

    def _finish_put(
        self, area: int, offs: Keys, versions: Sequence[int], put: _Put, poor: int
    ) -> None:
        if self._full:
            log.info("pool budget of %d bytes reached: refusing stores", self.config.budget_bytes)
        used = len(put.done_i)
        self._free_slots.extend(put.slots[used:])
        n = len(offs)
        self._c["reject_compress_poor"] += poor
        self._c["reject_pool_limit"] += n - used - poor
        self._c["failed_stores"] += n - used
        self._c["succ_stores"] += used
        if used:
            self._commit(area, offs, versions, put)

    def put_many(
        self,
        area: int,
        offsets: Sequence[int] | I64,
        pages: Sequence[bytes | bytearray],
        versions: Sequence[int],
    ) -> list[bool]:
        """Store pages (already validated: right length, distinct keys); False means refused.

        An existing copy of a key is always dropped first, so a refused overwrite leaves no
        stale data behind.
        """
        offs = _keys(offsets)
        ok = [False] * len(pages)
        put = self._begin_put(area, offs)
        if put is None:
            return ok
        cfg = self.config
        budget = cfg.budget_bytes
        base = put.base
        slots = put.slots
        alloc = self._alloc
        alloc_obj = alloc.alloc
        compress = lz4.block.compress
        digest = xxhash.xxh3_64_intdigest
        limit = cfg.compress_limit
        keep_raw = cfg.keep_incompressible
        done_i, kinds, handles, lengths, sums = (
            put.done_i,
            put.kinds,
            put.handles,
            put.lengths,
            put.sums,
        )
        poor = 0
        s = 0
        for i, page in enumerate(pages):
            if s == len(slots):
                break
            word = page[:8]
            if page[8:16] == word and page[8:] == page[:-8]:
                if base + alloc.resident_bytes > budget:
                    self._full = True
                    break
                kind, handle, length = SAME, int.from_bytes(word, "little"), 0
            else:
                packed = compress(page, store_size=False)
                if len(packed) <= limit:
                    kind, data, length = LZ4, packed, len(packed)
                elif keep_raw:
                    kind, data, length = RAW, page, 0
                else:
                    poor += 1
                    continue
                handle = alloc_obj(data, slots[s], budget - base)
                if handle < 0:
                    self._full = True
                    break
            done_i.append(i)
            kinds.append(kind)
            handles.append(handle)
            lengths.append(length)
            sums.append(digest(page))
            ok[i] = True
            s += 1
        self._finish_put(area, offs, versions, put, poor)
        return ok

    def put_stored_many(
        self,
        area: int,
        offsets: Sequence[int] | I64,
        payloads: Sequence[bytes | bytearray | memoryview],
        versions: Sequence[int],
        checksums: Sequence[int],
    ) -> list[bool]:
        """Keep pages already in stored form (see `stored_kind`), as a holder does for peers.

        Nothing is recompressed here; the checksum travels with the payload and is verified by
        whoever expands the page. Same budget, hysteresis and old-copy rules as `put_many`.
        """
        offs = _keys(offsets)
        ok = [False] * len(payloads)
        put = self._begin_put(area, offs)
        if put is None:
            return ok
        budget = self.config.budget_bytes
        base = put.base
        slots = put.slots
        alloc = self._alloc
        ps = self._ps
        for i, payload in enumerate(payloads):
            s = len(put.done_i)
            if s == len(slots):
                break
            kind = stored_kind(len(payload), ps)
            if kind == SAME:
                if base + alloc.resident_bytes > budget:
                    self._full = True
                    break
                handle, length = int.from_bytes(payload, "little"), 0
            else:
                handle = alloc.alloc(payload, slots[s], budget - base)
                if handle < 0:
                    self._full = True
                    break
                length = len(payload) if kind == LZ4 else 0
            put.done_i.append(i)
            put.kinds.append(kind)
            put.handles.append(handle)
            put.lengths.append(length)
            put.sums.append(checksums[i])
            ok[i] = True
        self._finish_put(area, offs, versions, put, 0)
        return ok

    def get_stored_many(
        self, area: int, offsets: Sequence[int] | I64
    ) -> list[tuple[int, int, bytes] | None]:
        """(version, checksum, stored payload) per key, None where absent or only remote."""
        slots = self._lookup(area, _keys(offsets))
        rows = zip(
            *self._columns(slots, "kind", "handle", "length", "version", "checksum"), strict=True
        )
        out: list[tuple[int, int, bytes] | None] = []
        for kind, handle, length, version, checksum_ in rows:
            if kind in (EMPTY, REMOTE):
                out.append(None)
            elif kind == SAME:
                out.append((version, checksum_, handle.to_bytes(8, "little")))
            else:
                size = length if kind == LZ4 else self._ps
                out.append((version, checksum_, bytes(self._alloc.view(handle, size))))
        self._c["loads"] += len(out) - out.count(None)
        self._touch(slots)
        return out

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
        if remote:
            self._remote += used
            return
        raw = put.kinds.count(RAW)
        self._stored += used
        self._same += put.kinds.count(SAME)
        self._huge += raw
        self._compr += sum(put.lengths) + raw * self._ps

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

    # -- loads ---------------------------------------------------------------------------------

    def get_many(
        self, area: int, offsets: Sequence[int] | I64, exclusive: bool = False
    ) -> list[bytes | None]:
        """Pages by key, None where absent; every copy is checked before it is returned.

        Raises CorruptPage (and frees nothing) if any requested copy fails its check.
        """
        offs = _keys(offsets)
        slots = self._lookup(area, offs)
        kinds, handles, lengths, sums = self._columns(slots, "kind", "handle", "length", "checksum")
        # Live handles never point at a released slab (None): no check in the loop.
        slabs: list[Any] = self._alloc.table()
        ps = self._ps
        decompress = lz4.block.decompress
        digest = xxhash.xxh3_64_intdigest
        zero = self._zero_page
        words = ps // 8
        out: list[bytes | None] = []
        bad: list[int] = []
        zero_sum = self._zero_sum
        for kind, h, length, s in zip(kinds, handles, lengths, sums, strict=True):
            if kind == LZ4:
                slab = slabs[h >> OBJ_BITS]
                at = (h & OBJ_MASK) * slab.size
                try:
                    page = decompress(slab.buf[at : at + length], uncompressed_size=ps)
                except lz4.block.LZ4BlockError:
                    page = b""
            elif kind == SAME:
                if h == 0 and s == zero_sum:
                    out.append(zero)  # the pattern and its checksum agree: nothing to hash
                    continue
                page = h.to_bytes(8, "little") * words
            elif kind == RAW:
                slab = slabs[h >> OBJ_BITS]
                at = (h & OBJ_MASK) * slab.size
                page = slab.buf[at : at + ps].tobytes()
            else:
                out.append(None)
                continue
            if digest(page) != s:  # also catches a short or failed decompression
                bad.append(len(out))
            out.append(page)
        hits = len(out) - out.count(None)
        if bad:
            self._c["checksum_failures"] += len(bad)
            bad_offsets = [int(offs[i]) for i in bad]
            log.error("checksum mismatch in area %d at offsets %s", area, bad_offsets[:8])
            raise CorruptPage(
                f"{len(bad)} stored page(s) in area {area} failed the checksum "
                f"(first offset {bad_offsets[0]}); they are kept for inspection, never returned",
                area=area,
                offset=bad_offsets[0],
            )
        self._c["loads"] += hits
        if exclusive:
            self._c["exclusive_loads"] += hits
            # Remote entries stay: the caller fetches them and then drops them itself.
            if isinstance(slots, list):
                mine = [i for i, k in enumerate(kinds) if k not in (EMPTY, REMOTE)]
                self._free_small(area, [int(offs[i]) for i in mine], [slots[i] for i in mine])
            else:
                present = (slots > 0) & (self._meta["kind"][slots] != REMOTE)
                self._free(area, np.asarray(offs)[present], slots[present])
        else:
            self._touch(slots)
        return out

    def versions(self, area: int, offsets: Sequence[int] | I64) -> list[int | None]:
        """Stored version of each key, None where absent."""
        slots = self._lookup(area, _keys(offsets))
        (vers,) = self._columns(slots, "version")
        if not isinstance(slots, list):
            slots = slots.tolist()
        return [v if s else None for v, s in zip(vers, slots, strict=True)]

    # -- invalidation --------------------------------------------------------------------------

    def drop_many(self, area: int, offsets: Sequence[int] | I64) -> int:
        """Drop keys (absent ones are ignored); returns how many were dropped."""
        if not self._index.has_area(area):
            return 0
        offs = _keys(offsets)
        # Distinct and ascending either way, so that both paths free in the same order.
        offs = sorted(set(offs)) if isinstance(offs, list) else np.unique(offs)
        dropped = self._drop_present(area, offs)
        self._c["invalidates"] += dropped
        return dropped

    def drop_area(self, area: int, record_remote: bool = True) -> int:
        """Drop every page of an area; returns how many were dropped.

        With record_remote=False, remote entries are forgotten without queueing per-page drops
        (the caller drops the whole area on every holder instead).
        """
        offs = self._index.area_offsets(area)
        slots = self._index.lookup(area, offs)
        if len(offs):
            self._free(area, offs, slots, record_remote)
        self._c["invalidates"] += len(offs)
        return len(offs)

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
        remote = kinds == REMOTE
        n_remote = int(np.count_nonzero(remote))
        if n_remote:
            self._remote -= n_remote
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
        self._compr -= int(m["length"][slots_local].sum(dtype=np.int64)) + raw * self._ps
        m["kind"][slots] = EMPTY
        self._index.remove(area, offs)
        self._free_slots.extend(slots.tolist())

    def _free_small(
        self, area: int, offs: list[int], slots: list[int], record_remote: bool = True
    ) -> None:
        """`_free` for a few keys as plain ints, freeing and counting in the same order."""
        mv = self._mv
        kind, handle, length = mv["kind"], mv["handle"], mv["length"]
        free = self._alloc.free
        remote_drops = self._remote_drops
        ps = self._ps
        for off, slot in zip(offs, slots, strict=True):
            k = kind[slot]
            if k == REMOTE:
                self._remote -= 1
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
        self._index.remove_small(area, offs)
        self._free_slots.extend(slots)

    # -- pages that live on remote holders ------------------------------------------------------

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
        self._compr -= int(m["length"][sl].sum(dtype=np.int64)) + raw * self._ps
        self._remote += len(sl)
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
        base = self._meta_bytes() + index_growth + 4 * len(slots)
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
        """How many remote pages are in any of the sets (no per-page lists)."""
        m = self._meta
        kinds = m["kind"][: self._hw]
        handles = m["handle"][: self._hw]
        hit = (kinds == REMOTE) & np.isin(handles, np.asarray(set_ids, dtype=np.uint64))
        return int(np.count_nonzero(hit))

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
        """Remote pages per holder-set number."""
        m = self._meta
        kinds = m["kind"][: self._hw].astype(np.uint8, copy=False)
        handles = m["handle"][: self._hw][kinds == REMOTE]
        if not len(handles):
            return {}
        sets, counts = np.unique(handles, return_counts=True)
        return dict(zip(sets.tolist(), counts.tolist(), strict=True))

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
        m["handle"][slots[ok]] = new_set
        return ok.tolist()  # type: ignore[no-any-return]

    def drain_remote_drops(self) -> list[tuple[int, int, int, int]]:
        """(holder set, area, offset, version) of remote copies forgotten since the last call."""
        drops, self._remote_drops = self._remote_drops, []
        return drops

    # -- cold-first order, compaction ----------------------------------------------------------

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

    def compact(self) -> int:
        """Move blobs out of sparse slabs so that those slabs return to the OS; returns moves."""
        moves = self._alloc.compact()
        if moves:
            handle = self._meta["handle"]
            for slot, new_handle in moves:
                handle[slot] = new_handle
            self._c["compactions"] += 1
            self._c["pages_compacted"] += len(moves)
        return len(moves)

    def _tick_once(self) -> None:
        self._tick += 1
        if self._tick >= TICK_LIMIT:
            # Keep the order, squeeze the values: ranks fit easily in 32 bits.
            tick = self._meta["tick"][: self._hw]
            _, ranks = np.unique(tick, return_inverse=True)
            tick[:] = ranks.astype(np.uint32) + 1
            self._tick = int(tick.max()) + 1

    # -- test hooks and statistics -------------------------------------------------------------

    def corrupt_for_test(self, area: int, offset: int) -> None:
        """Flip a byte of a stored copy in place, to prove that loads detect it."""
        slot = int(self._index.lookup(area, np.asarray([offset], dtype=np.int64))[0])
        if not slot:
            raise KeyError((area, offset))
        m = self._meta
        if int(m["kind"][slot]) == SAME:
            m["handle"][slot] ^= np.uint64(0xFF)
        else:
            self._alloc.corrupt_for_test(int(m["handle"][slot]), 0)

    def age_for_test(self, area: int, offset: int) -> None:
        """Make a stored copy look one version older (a stale replica), for tests."""
        slot = int(self._index.lookup(area, np.asarray([offset], dtype=np.int64))[0])
        if not slot:
            raise KeyError((area, offset))
        self._meta["version"][slot] -= np.uint64(1)

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's counters and sizes (bytes)."""
        c = self._c
        return PoolStatistics(
            stored_pages=self._stored,
            remote_pages=self._remote,
            same_filled_pages=self._same,
            huge_pages=self._huge,
            orig_data_size=self._stored * self._ps,
            compr_data_size=self._compr,
            pool_total_size=self.used_bytes,
            pool_limit=self.config.budget_bytes,
            metadata_size=self._meta_bytes() + self._alloc.statistics().bookkeeping_bytes,
            reject_pool_limit=c["reject_pool_limit"],
            reject_compress_poor=c["reject_compress_poor"],
            succ_stores=c["succ_stores"],
            failed_stores=c["failed_stores"],
            loads=c["loads"],
            exclusive_loads=c["exclusive_loads"],
            invalidates=c["invalidates"],
            checksum_failures=c["checksum_failures"],
            compactions=c["compactions"],
            pages_compacted=c["pages_compacted"],
            full=self._full,
        )
