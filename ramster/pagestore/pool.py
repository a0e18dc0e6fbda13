"""The compressed page pool: same-filled detection, lz4, slabs, budget, versions, checksums.

`PagePool` is its core (core.py) plus the remote-only entries (remote.py) and the cold-first
order (cold.py); this module holds the stores, loads and drops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lz4.block
import numpy as np
import xxhash

from ramster.errors import CorruptPage, InvalidPage
from ramster.pagestore.codec import EMPTY, LZ4, RAW, REMOTE, SAME, stored_kind
from ramster.pagestore.cold import ColdOrder
from ramster.pagestore.core import COMPACT_STEP, I64, Keys, _keys, _Put
from ramster.pagestore.ephemeral import EphemeralPages
from ramster.pagestore.remote import RemoteEntries
from ramster.pagestore.slab import OBJ_BITS, OBJ_MASK

log = logging.getLogger(__name__)


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
    evicts: int = 0
    """Ephemeral pages dropped to make room (for persistent ones first of all)."""
    ephemeral_pages: int = 0
    ephemeral_bytes: int = 0
    """Compressed bytes of the ephemeral pages kept: room any persistent store can have."""


class PagePool(RemoteEntries, ColdOrder, EphemeralPages):
    """Pages by (area, offset), compressed in RAM within a byte budget; no I/O, not thread-safe."""

    def _begin_put(self, area: int, offs: Keys) -> _Put | None:
        """Drop old copies, apply the hysteresis, reserve slots; None when the pool is full."""
        n = len(offs)
        self._drop_present(area, offs)
        self._tick_once()
        cfg = self.config
        budget = cfg.budget_bytes
        self._end_full_below_threshold()
        fragmented = self._alloc.fragmented_bytes()
        worth = fragmented >= max(256 << 10, budget // 20)
        if not worth:
            self._futile_at = 0
        elif self.used_bytes > cfg.accept_bytes and fragmented > self._futile_at:
            moved = self.compact(COMPACT_STEP)
            if not moved:
                # Nothing worth moving at this fragmentation: try again once it has grown.
                self._futile_at = fragmented + budget // 100
        if self._full:
            self._c["reject_pool_limit"] += n
            self._c["failed_stores"] += n
            return None
        index_growth = self._growth(area, offs)
        slots = self._take_slots(n, budget - self.used_bytes - index_growth)
        return _Put(slots, self._meta_bytes() + index_growth)

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
        evict: bool = True,
    ) -> list[bool]:
        """Store pages (already validated: right length, distinct keys); False means refused.

        An existing copy of a key is always dropped first, so a refused overwrite leaves no
        stale data behind. Ephemeral pages are evicted, coldest first, while the budget is short
        (unless evict=False).
        """
        offs = _keys(offsets)

        def attempt(idx: list[int]) -> tuple[list[bool], list[int]]:
            if len(idx) == len(pages):
                return self._put_pages(area, offs, pages, versions)
            return self._put_pages(
                area, _subset(offs, idx), [pages[i] for i in idx], [versions[i] for i in idx]
            )

        return self._making_room(len(pages), attempt, evict)

    def _put_pages(
        self,
        area: int,
        offs: Keys,
        pages: Sequence[bytes | bytearray],
        versions: Sequence[int],
    ) -> tuple[list[bool], list[int]]:
        """One attempt of `put_many`: (kept flags, indices refused as incompressible)."""
        ok = [False] * len(pages)
        put = self._begin_put(area, offs)
        if put is None:
            return ok, []
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
        poor: list[int] = []
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
                    poor.append(i)
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
        self._finish_put(area, offs, versions, put, len(poor))
        return ok, poor

    def put_stored_many(
        self,
        area: int,
        offsets: Sequence[int] | I64,
        payloads: Sequence[bytes | bytearray | memoryview],
        versions: Sequence[int],
        checksums: Sequence[int],
        evict: bool = True,
    ) -> list[bool]:
        """Keep pages already in stored form (see `stored_kind`), as a holder does for peers.

        Nothing is recompressed here; the checksum travels with the payload and is verified by
        whoever expands the page. Same budget, hysteresis and old-copy rules as `put_many`.
        InvalidPage, before anything changes, for a payload that is empty or over a page.
        """
        if payloads and not 0 < min(map(len, payloads)) <= max(map(len, payloads)) <= self._ps:
            raise InvalidPage(f"a stored payload is 1 to {self._ps} bytes long")
        offs = _keys(offsets)

        def attempt(idx: list[int]) -> tuple[list[bool], list[int]]:
            if len(idx) == len(payloads):
                return self._put_stored(area, offs, payloads, versions, checksums), []
            return self._put_stored(
                area,
                _subset(offs, idx),
                [payloads[i] for i in idx],
                [versions[i] for i in idx],
                [checksums[i] for i in idx],
            ), []

        return self._making_room(len(payloads), attempt, evict)

    def _put_stored(
        self,
        area: int,
        offs: Keys,
        payloads: Sequence[bytes | bytearray | memoryview],
        versions: Sequence[int],
        checksums: Sequence[int],
    ) -> list[bool]:
        """One attempt of `put_stored_many`."""
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
        # Live handles never point at a released slab (None): no check in the loop.
        slabs: list[Any] = self._alloc.table()
        ps = self._ps
        out: list[tuple[int, int, bytes] | None] = []
        for kind, handle, length, version, checksum_ in rows:
            if kind in (LZ4, RAW):
                slab = slabs[handle >> OBJ_BITS]
                at = (handle & OBJ_MASK) * slab.size
                end = at + (length if kind == LZ4 else ps)
                out.append((version, checksum_, slab.buf[at:end].tobytes()))
            elif kind == SAME:
                out.append((version, checksum_, handle.to_bytes(8, "little")))
            else:
                out.append(None)
        self._c["loads"] += len(out) - out.count(None)
        self._touch(slots)
        return out

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

    def area_offsets(self, area: int, limit: int | None = None) -> I64:
        """Offsets of an area held here (unordered): all, or at least `limit` of them."""
        return self._index.area_offsets(area, limit)

    def area_leaves(self, area: int) -> list[int]:
        """First offsets of the area's index leaves, ascending: a walk in bounded steps."""
        return self._index.area_leaves(area)

    def leaf_offsets(self, area: int, first: int) -> I64:
        """Offsets held in the index leaf starting at `first` (at most 64), ascending."""
        return self._index.leaf_offsets(area, first)

    def area_pages(self, area: int) -> int:
        """Pages of an area held here (without scanning)."""
        return self._area_pages.get(area, 0)

    def note_exclusive(self, pages: int) -> None:
        """Count pages loaded exclusively by a caller that frees them itself afterwards."""
        self._c["exclusive_loads"] += pages

    def versions(self, area: int, offsets: Sequence[int] | I64) -> list[int | None]:
        """Stored version of each key, None where absent."""
        slots = self._lookup(area, _keys(offsets))
        (vers,) = self._columns(slots, "version")
        if not isinstance(slots, list):
            slots = slots.tolist()
        return [v if s else None for v, s in zip(vers, slots, strict=True)]

    def checksums(self, area: int, offsets: Sequence[int] | I64) -> list[int | None]:
        """Stored checksum of each key, None where absent."""
        slots = self._lookup(area, _keys(offsets))
        (sums,) = self._columns(slots, "checksum")
        if not isinstance(slots, list):
            slots = slots.tolist()
        return [c if s else None for c, s in zip(sums, slots, strict=True)]

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
            evicts=c["evicts"],
            ephemeral_pages=self._eph_pages,
            ephemeral_bytes=self._eph_bytes,
        )


def _subset(offs: Keys, idx: list[int]) -> Keys:
    """The keys at the given indices, in the form `_keys` gives for that many."""
    if isinstance(offs, list):
        return [offs[i] for i in idx]
    return _keys(offs[np.asarray(idx, dtype=np.int64)])
