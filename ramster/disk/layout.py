"""The disk store's record format and its extent allocator: pure, no I/O.

A record is a fixed header, the stored (compressed) payload, and zero padding up to a whole
number of blocks. The header names the page (scope, area, offset), its version, the checksum of
the uncompressed page (`ramster.pagestore.codec.checksum`: a loaded page is verified exactly as a
RAM page is) and the payload's length; `seal` is an xxh3-64 over the rest of the header and the
payload, so a torn, misplaced or flipped record fails to open instead of yielding wrong bytes.
A record says nothing of where it lies, so compaction moves it by copying its bytes verbatim.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import xxhash

from ramster.errors import InvalidPage

BLOCK = 512
"""Allocation and padding granularity. An lz4 page averages 1-2 KiB and a same-filled one is 8
bytes: 4 KiB blocks would waste half the file on padding, 512 B wastes under 512 B a record. 512 B
is every disk's logical sector, and the store uses buffered I/O (no O_DIRECT), so nothing needs
4 KiB alignment; the page cache absorbs the read-modify-write of a partial page."""
MAGIC = b"RMD1"
HEADER = struct.Struct("<4sIQI4xQQQQ")
"""magic, payload length, scope, area, (pad), offset, version, page checksum, seal."""
HEADER_SIZE = HEADER.size
_SEALED = HEADER_SIZE - 8
"""The seal covers the header up to itself, then the payload."""
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
EXACT_BINS = 64
"""Free extents shorter than this many blocks have a list per length (records are 1-9 blocks
long with 4 KiB pages); longer ones share a list per power of two."""

DiskKey = tuple[int, int, int]
"""(scope, area, offset): scope names the owner (and incarnation) the page belongs to."""


@dataclass(frozen=True, slots=True)
class Record:
    """A record read back and opened: its header fields and payload."""

    key: DiskKey
    version: int
    checksum: int
    payload: bytes


def check_key(key: DiskKey) -> None:
    """Raise InvalidPage unless the key's fields fit the header (u64, u32, u64)."""
    scope, area, offset = key
    if not (0 <= scope <= U64 and 0 <= area <= U32 and 0 <= offset <= U64):
        raise InvalidPage(f"disk key out of range: {key}")


def record_blocks(payload_len: int) -> int:
    """Blocks a record with a payload of `payload_len` bytes occupies."""
    return -(-(HEADER_SIZE + payload_len) // BLOCK)


def encode_record(
    key: DiskKey, version: int, checksum: int, payload: bytes | bytearray | memoryview
) -> bytes:
    """The record's bytes, padded to whole blocks."""
    scope, area, offset = key
    n = len(payload)
    head = HEADER.pack(MAGIC, n, scope, area, offset, version, checksum, 0)[:_SEALED]
    hasher = xxhash.xxh3_64(head)
    hasher.update(payload)
    seal = struct.pack("<Q", hasher.intdigest())
    pad = record_blocks(n) * BLOCK - HEADER_SIZE - n
    return b"".join((head, seal, payload, bytes(pad)))


def decode_record(buf: bytes | memoryview) -> Record | None:
    """The record at the start of `buf`, or None if it is short, not a record or fails its seal."""
    if len(buf) < HEADER_SIZE:
        return None
    magic, n, scope, area, offset, version, checksum, seal = HEADER.unpack_from(buf)
    if magic != MAGIC or len(buf) < HEADER_SIZE + n:
        return None
    hasher = xxhash.xxh3_64(buf[:_SEALED])
    payload = bytes(buf[HEADER_SIZE : HEADER_SIZE + n])
    hasher.update(payload)
    if hasher.intdigest() != seal:
        return None
    return Record((scope, area, offset), version, checksum, payload)


@dataclass(frozen=True, slots=True)
class AllocatorStatistics:
    """Blocks of the file by state, and how broken up the free space is."""

    total_blocks: int
    used_blocks: int
    free_blocks: int
    free_extents: int
    largest_free_blocks: int
    fragmentation: float
    """1 - largest free run / free blocks: 0 is one free run, near 1 is dust."""


def _bin(length: int) -> int:
    if length < EXACT_BINS:
        return length
    return EXACT_BINS + length.bit_length() - EXACT_BINS.bit_length()


class ExtentAllocator:
    """Runs of blocks in a file of `total_blocks`: allocate, free (coalescing), statistics.

    Only free space is recorded (memory grows with the free extents, which are at most one more
    than the allocated ones); the caller remembers what it allocated and frees exactly that.
    """

    def __init__(self, total_blocks: int) -> None:
        if total_blocks <= 0:
            raise ValueError("total_blocks must be positive")
        self.total_blocks = total_blocks
        self._by_start: dict[int, int] = {}  # free extent start -> length
        self._by_end: dict[int, int] = {}  # free extent end (exclusive) -> start
        self._bins: list[set[int]] = [set() for _ in range(_bin(total_blocks) + 1)]
        self._free = 0
        self._insert(0, total_blocks)

    def _insert(self, start: int, length: int) -> None:
        self._by_start[start] = length
        self._by_end[start + length] = start
        self._bins[_bin(length)].add(start)
        self._free += length

    def _remove(self, start: int) -> int:
        length = self._by_start.pop(start)
        del self._by_end[start + length]
        self._bins[_bin(length)].discard(start)
        self._free -= length
        return length

    def alloc(self, n: int, below: int | None = None) -> int:
        """Start of a new run of `n` blocks, or -1 if none fits; with `below`, only a run that
        starts before that block (the lowest such), for compaction."""
        if n <= 0:
            raise ValueError("n must be positive")
        first = _bin(n)
        if below is not None:
            lowest = below
            for b in range(first, len(self._bins)):
                starts = self._bins[b]
                if not starts:
                    continue
                if b < EXACT_BINS:
                    low = min(starts)  # every run in the bin fits: min() alone, in C
                else:
                    low = min((s for s in starts if self._by_start[s] >= n), default=below)
                lowest = min(lowest, low)
            return -1 if lowest >= below else self._take(lowest, n)
        for b in range(first, len(self._bins)):
            starts = self._bins[b]
            if not starts:
                continue
            if b < EXACT_BINS or b > first:
                return self._take(next(iter(starts)), n)
            # The power-of-two bin n itself falls in may hold runs shorter than n.
            for s in starts:
                if self._by_start[s] >= n:
                    return self._take(s, n)
        return -1

    def _take(self, start: int, n: int) -> int:
        length = self._remove(start)
        if length > n:
            self._insert(start + n, length - n)
        return start

    def free(self, start: int, n: int) -> None:
        """Give back a run allocated before; it merges with free neighbours."""
        end = start + n
        if n <= 0 or start < 0 or end > self.total_blocks:
            raise ValueError(f"bad extent {start}+{n}")
        if start in self._by_start or end in self._by_end:
            raise ValueError(f"double free of {start}+{n}")
        left = self._by_end.get(start)
        if left is not None:
            self._remove(left)
            start = left
        if end in self._by_start:
            end += self._remove(end)
        self._insert(start, end - start)

    def free_start_ending_at(self, end: int) -> int | None:
        """Start of the free run that ends at block `end`, if one does."""
        return self._by_end.get(end)

    def free_extents(self) -> Iterator[tuple[int, int]]:
        """(start, length) of every free run, by address (sorts: for tests and tools)."""
        return iter(sorted(self._by_start.items()))

    def largest_free(self) -> int:
        """Length of the longest free run (0 when full)."""
        for starts in reversed(self._bins):
            if starts:
                return max(self._by_start[s] for s in starts)
        return 0

    def statistics(self) -> AllocatorStatistics:
        """A snapshot of the allocator's counters."""
        largest = self.largest_free()
        return AllocatorStatistics(
            total_blocks=self.total_blocks,
            used_blocks=self.total_blocks - self._free,
            free_blocks=self._free,
            free_extents=len(self._by_start),
            largest_free_blocks=largest,
            fragmentation=1.0 - largest / self._free if self._free else 0.0,
        )


def tail_records(
    allocator: ExtentAllocator,
    record_ending_at: Callable[[int], int | None],
    max_blocks: int,
) -> list[tuple[int, int]]:
    """(start, blocks) of the live records nearest the file's end, last first, covering at most
    `max_blocks` (and at least one record): what compaction should move down to grow the free
    tail. Walks down from the end over free runs and records; stops at a block that is neither
    (a write still in flight) or at the file's start."""
    out: list[tuple[int, int]] = []
    covered = 0
    p = allocator.total_blocks
    while p > 0:
        free_start = allocator.free_start_ending_at(p)
        if free_start is not None:
            p = free_start
            continue
        start = record_ending_at(p)
        if start is None:
            break
        if out and covered + (p - start) > max_blocks:
            break
        out.append((start, p - start))
        covered += p - start
        p = start
    return out
