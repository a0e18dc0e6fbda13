"""The disk store's state without I/O: which record holds which page, the writes in flight, the
extents a reader may still be reading, and the counters. `DiskStore` drives it from the event
loop; every method here runs without an await, so the index never moves under one."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ramster.disk.layout import BLOCK, DiskKey, ExtentAllocator, encode_record, record_blocks
from ramster.disk.layout import tail_records as _tail_records

COUNTERS = (
    "written_back_pages",
    "written_bytes",
    "loads",
    "loaded_bytes",
    "load_misses",
    "corrupt_records",
    "read_errors",
    "write_errors",
    "abandoned_writes",
    "reject_full",
    "compactions",
    "moved_bytes",
)


class Entry:
    """A record in the file that the index vouches for (or will, once its write lands)."""

    __slots__ = ("blocks", "checksum", "key", "length", "start", "version")

    def __init__(
        self, key: DiskKey, start: int, blocks: int, version: int, checksum: int, length: int
    ) -> None:
        self.key = key
        self.start = start
        self.blocks = blocks
        self.version = version
        self.checksum = checksum
        self.length = length


class _Pending:
    """Writes of one key in flight: how many, the newest version, and the floor at or below
    which their records are dropped on landing (a drop or a failed store came meanwhile)."""

    __slots__ = ("count", "floor", "newest")

    def __init__(self) -> None:
        self.count = 0
        self.newest = -1
        self.floor = -1


@dataclass(slots=True)
class Write:
    """One record to write: the caller's index of the page, where it goes, its bytes."""

    index: int
    entry: Entry
    data: bytes


def contiguous(writes: Sequence[Write]) -> list[list[Write]]:
    """Writes to adjacent extents, in runs that one call can write."""
    runs: list[list[Write]] = []
    end = -1
    for w in sorted(writes, key=lambda w: w.entry.start):
        if w.entry.start != end:
            runs.append([])
        runs[-1].append(w)
        end = w.entry.start + w.entry.blocks
    return runs


class DiskIndex:
    """Pages by (scope, area, offset) → records in a file of `total_blocks`; newest wins."""

    def __init__(self, total_blocks: int) -> None:
        self.alloc = ExtentAllocator(total_blocks)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.stored_bytes = 0
        self._areas: dict[tuple[int, int], dict[int, Entry]] = {}
        self._ends: dict[int, Entry] = {}  # end block -> record: compaction walks from the top
        self._pending: dict[DiskKey, _Pending] = {}
        # Extents let go while a read may still be reading them wait here (by epoch) until it
        # is done, so that a reader never meets another record's bytes where it looked.
        self._epoch = 0
        self._readers: dict[int, int] = {}
        self._deferred: deque[tuple[int, int, int]] = deque()

    @property
    def stored_pages(self) -> int:
        """Records the index vouches for."""
        return len(self._ends)

    def lookup(self, key: DiskKey) -> Entry | None:
        """The record kept for `key`, if any."""
        area = self._areas.get(key[:2])
        return None if area is None else area.get(key[2])

    def _set(self, entry: Entry) -> None:
        self._areas.setdefault(entry.key[:2], {})[entry.key[2]] = entry
        self._ends[entry.start + entry.blocks] = entry
        self.stored_bytes += entry.length

    def _unset(self, entry: Entry) -> None:
        area = self._areas[entry.key[:2]]
        del area[entry.key[2]]
        if not area:
            del self._areas[entry.key[:2]]
        self._let_go(entry)

    def _let_go(self, entry: Entry) -> None:
        del self._ends[entry.start + entry.blocks]
        self.stored_bytes -= entry.length
        if self._readers:
            self._deferred.append((self._epoch, entry.start, entry.blocks))
            self._epoch += 1
        else:
            self.alloc.free(entry.start, entry.blocks)

    # -- readers ---------------------------------------------------------------------------

    def enter_read(self) -> int:
        """Hold every extent indexed now until `leave_read` with the returned token."""
        epoch = self._epoch
        self._readers[epoch] = self._readers.get(epoch, 0) + 1
        return epoch

    def leave_read(self, epoch: int) -> None:
        """The read that `enter_read` returned `epoch` to is done; free what waited for it."""
        self._readers[epoch] -= 1
        if not self._readers[epoch]:
            del self._readers[epoch]
        oldest = min(self._readers, default=self._epoch + 1)
        while self._deferred and self._deferred[0][0] < oldest:
            _, start, blocks = self._deferred.popleft()
            self.alloc.free(start, blocks)

    # -- drops -----------------------------------------------------------------------------

    def drop(self, key: DiskKey, upto: int | None) -> bool:
        """Drop `key` if its version is at most `upto` (None: any); writes of it in flight at or
        below that version land dropped. True if a record went."""
        pending = self._pending.get(key)
        if pending is not None:
            pending.floor = max(pending.floor, pending.newest if upto is None else upto)
        entry = self.lookup(key)
        if entry is None or (upto is not None and entry.version > upto):
            return False
        self._unset(entry)
        return True

    def drop_area(self, scope: int, area: int) -> int:
        """Drop every page of (scope, area), writes in flight included; returns how many."""
        for key, pending in self._pending.items():
            if key[:2] == (scope, area):
                pending.floor = pending.newest
        entries = self._areas.pop((scope, area), {})
        for entry in entries.values():
            self._let_go(entry)
        return len(entries)

    # -- writes ----------------------------------------------------------------------------

    def plan(
        self,
        chunk: Sequence[int],
        keys: Sequence[DiskKey],
        versions: Sequence[int],
        checksums: Sequence[int],
        payloads: Sequence[bytes],
    ) -> tuple[list[tuple[int, bool]], list[Write]]:
        """Decide which pages of `chunk` (indices into the lists) to write and where: the answer
        for those decided now, and the writes, each to `land` once done."""
        out: list[tuple[int, bool]] = []
        accepted: list[int] = []
        newest: dict[DiskKey, int] = {}
        for i in chunk:
            key, version = keys[i], versions[i]
            entry = self.lookup(key)
            pending = self._pending.get(key)
            if entry is not None and version <= entry.version:
                out.append((i, version == entry.version and checksums[i] == entry.checksum))
            elif (
                pending is not None and (version < pending.newest or version <= pending.floor)
            ) or (version < newest.get(key, -1)):
                out.append((i, False))
            else:
                newest[key] = version
                accepted.append(i)
        sizes = [record_blocks(len(payloads[i])) for i in accepted]
        # One extent for the whole batch when there is one: a single write call.
        at = self.alloc.alloc(sum(sizes)) if accepted else -1
        writes: list[Write] = []
        for i, blocks in zip(accepted, sizes, strict=True):
            key = keys[i]
            start = at if at >= 0 else self.alloc.alloc(blocks)
            if at >= 0:
                at += blocks
            if start < 0:
                self.counts["reject_full"] += 1
                self.drop(key, versions[i])
                out.append((i, False))
                continue
            pending = self._pending.setdefault(key, _Pending())
            pending.count += 1
            pending.newest = max(pending.newest, versions[i])
            entry = Entry(key, start, blocks, versions[i], checksums[i], len(payloads[i]))
            data = encode_record(key, versions[i], checksums[i], payloads[i])
            writes.append(Write(i, entry, data))
        return out, writes

    def land(
        self, runs: list[list[Write]], ok: Sequence[bool], failed: str = "write_errors"
    ) -> list[tuple[int, bool]]:
        """Index the records of the runs written (`ok` per run); free the rest, counting them
        under `failed`. A failed write drops the key's older versions too: a failed overwrite
        never brings stale bytes back."""
        out: list[tuple[int, bool]] = []
        for run, written in zip(runs, ok, strict=True):
            for w in run:
                new = w.entry
                pending = self._pending[new.key]
                pending.count -= 1
                floor = pending.floor
                if not pending.count:
                    del self._pending[new.key]
                if not written:
                    self.counts[failed] += 1
                    self.alloc.free(new.start, new.blocks)
                    self.drop(new.key, new.version)
                    out.append((w.index, False))
                    continue
                old = self.lookup(new.key)
                if new.version <= floor or (old is not None and old.version >= new.version):
                    # Dropped or overtaken while in flight: it was kept, and is gone now.
                    self.alloc.free(new.start, new.blocks)
                else:
                    if old is not None:
                        self._unset(old)
                    self._set(new)
                    self.counts["written_back_pages"] += 1
                    self.counts["written_bytes"] += new.length
                out.append((w.index, True))
        return out

    # -- compaction ------------------------------------------------------------------------

    def plan_moves(self, max_blocks: int) -> list[tuple[Entry, int]]:
        """(record, new start) for live records near the file's end that fit lower down, at most
        `max_blocks` of them; the new extents are taken (give them to `land_moves`)."""
        moves: list[tuple[Entry, int]] = []

        def record_ending_at(end: int) -> int | None:
            entry = self._ends.get(end)
            return None if entry is None else entry.start

        for start, blocks in _tail_records(self.alloc, record_ending_at, max_blocks):
            new = self.alloc.alloc(blocks, below=start)
            if new < 0:
                break
            moves.append((self._ends[start + blocks], new))
        return moves

    def land_moves(self, moves: Sequence[tuple[Entry, int]], ok: Sequence[bool]) -> int:
        """Point the index at the copies written (`ok` per move) whose record is still the one
        kept (not overwritten or dropped meanwhile); free the other copies. Returns bytes moved."""
        moved = 0
        for (old, new), copied in zip(moves, ok, strict=True):
            if not copied or self.lookup(old.key) is not old:
                self.alloc.free(new, old.blocks)
                continue
            self._unset(old)
            self._set(Entry(old.key, new, old.blocks, old.version, old.checksum, old.length))
            moved += old.blocks * BLOCK
        if moved:
            self.counts["compactions"] += 1
            self.counts["moved_bytes"] += moved
        return moved
