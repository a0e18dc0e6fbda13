"""The disk tier: compressed pages in one preallocated file, written in batches and read with
positioned reads off the event loop (`asyncio.to_thread`), newest version winning.

Not persistent: the index lives in memory and opening a file truncates it, so a restarted node
starts with an empty store. Every record still carries its key, version and seal, and each read
is checked against the index: a bad record is a miss, never wrong bytes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ramster.disk.flow import ByteBudget, DiskConfig
from ramster.disk.index import DiskIndex, Entry, Write, contiguous
from ramster.disk.io import DiskError, Io, OsIo, prepare_file, read_exact, write_all
from ramster.disk.layout import BLOCK, U64, DiskKey, check_key, decode_record, record_blocks
from ramster.errors import InvalidPage
from ramster.telemetry.latency import Histogram

T = TypeVar("T")
Loaded = tuple[int, int, bytes]
"""(version, page checksum, stored payload) of a page read back."""


class DiskStore:
    """Stored payloads by (scope, area, offset) in a file of a fixed size; see the module doc."""

    def __init__(self, fd: int, total_blocks: int, config: DiskConfig, io: Io) -> None:
        self._fd = fd
        self._config = config
        self._io = io
        self._index = DiskIndex(total_blocks)
        self._counts = self._index.counts
        self._budget = ByteBudget(config.max_inflight_bytes)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._compacting = asyncio.Lock()
        self._latency = Histogram()
        self._write_seconds = 0.0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        budget_bytes: int,
        *,
        config: DiskConfig | None = None,
        io: Io | None = None,
    ) -> DiskStore:
        """A new, empty store in a file of `budget_bytes` (rounded down to whole blocks) at
        `path`, reserved on disk now: DiskFull if the disk cannot hold it."""
        total = budget_bytes // BLOCK
        if total <= 0:
            raise ValueError(f"disk budget {budget_bytes} is below one block ({BLOCK} bytes)")
        fd = await asyncio.to_thread(prepare_file, path, total * BLOCK)
        return cls(fd, total, config or DiskConfig(), io or OsIo())

    async def close(self) -> None:
        """Refuse new calls, wait for the I/O in flight, then close the file; idempotent (and
        a close that was cancelled while waiting can be called again)."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise DiskError("the disk store is closed")

    # -- I/O in threads --------------------------------------------------------------------

    async def _in_thread(
        self, fn: Callable[..., T], *args: Any, abandoned: Callable[[T | None], object]
    ) -> T:
        """fn(*args) in a worker thread. If the caller is cancelled the thread still runs to its
        end (close() waits for it) and `abandoned` then gets its result (None if it raised)."""
        task = asyncio.create_task(asyncio.to_thread(fn, *args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:

            def settle(t: asyncio.Task[T]) -> None:
                abandoned(None if t.cancelled() or t.exception() is not None else t.result())

            task.add_done_callback(settle)
            raise

    def _write_runs(self, runs: list[list[Write]]) -> list[bool]:
        """Write each run of adjacent records with one call; per run, whether it all landed."""
        ok = []
        for run in runs:
            try:
                write_all(self._io, self._fd, [w.data for w in run], run[0].entry.start * BLOCK)
            except OSError:
                ok.append(False)
            else:
                ok.append(True)
        return ok

    def _read_spans(self, spans: list[tuple[int, int]]) -> list[bytes | OSError]:
        out: list[bytes | OSError] = []
        for start, blocks in spans:
            try:
                out.append(read_exact(self._io, self._fd, blocks * BLOCK, start * BLOCK))
            except OSError as e:
                out.append(e)
        return out

    async def _read_entries(self, entries: Sequence[Entry], epoch: int) -> list[bytes | OSError]:
        """Each record's bytes (or its read's error), in few calls. The caller took `epoch` from
        the index's `enter_read` with no await since it saw `entries`; it is given back here."""
        try:
            spans: list[tuple[int, int]] = []
            span_of = [0] * len(entries)
            limit = self._config.max_read_bytes // BLOCK
            for k in sorted(range(len(entries)), key=lambda k: entries[k].start):
                e = entries[k]
                if spans:
                    start, blocks = spans[-1]
                    gap = e.start - (start + blocks)
                    end = e.start + e.blocks
                    if 0 <= gap <= self._config.read_gap_blocks and end - start <= limit:
                        spans[-1] = (start, end - start)
                        span_of[k] = len(spans) - 1
                        continue
                spans.append((e.start, e.blocks))
                span_of[k] = len(spans) - 1
            got = await self._in_thread(self._read_spans, spans, abandoned=lambda _: None)
        finally:
            self._index.leave_read(epoch)
        out: list[bytes | OSError] = []
        for e, i in zip(entries, span_of, strict=True):
            data = got[i]
            if isinstance(data, OSError):
                out.append(data)
            else:
                at = (e.start - spans[i][0]) * BLOCK
                out.append(data[at : at + e.blocks * BLOCK])
        return out

    def _verify(self, entry: Entry, data: bytes | OSError) -> bytes | None:
        """The payload if `data` is the whole, sealed record the index expects; counts why not."""
        if isinstance(data, OSError) or len(data) < entry.blocks * BLOCK:
            self._counts["read_errors"] += 1
            return None
        record = decode_record(data)
        if (
            record is None
            or record.key != entry.key
            or record.version != entry.version
            or record.checksum != entry.checksum
            or len(record.payload) != entry.length
        ):
            self._counts["corrupt_records"] += 1
            return None
        return record.payload

    # -- pages -----------------------------------------------------------------------------

    async def put_many(
        self,
        keys: Sequence[DiskKey],
        versions: Sequence[int],
        checksums: Sequence[int],
        payloads: Sequence[bytes],
    ) -> list[bool]:
        """Store each payload unless a newer or equal version is kept; per page, whether it is
        kept. False when there is no room or the write failed, and then no older version of that
        key is kept either (a failed overwrite never brings stale bytes back)."""
        n = len(keys)
        if not n == len(versions) == len(checksums) == len(payloads):
            raise InvalidPage("keys, versions, checksums and payloads differ in length")
        for key, version, checksum, payload in zip(
            keys, versions, checksums, payloads, strict=True
        ):
            check_key(key)
            if not (0 <= version <= U64 and 0 <= checksum <= U64):
                raise InvalidPage(f"version or checksum out of range for {key}")
            if len(payload) > self._config.max_payload:
                raise InvalidPage(f"payload of {len(payload)} bytes for {key} is too big")
        self._check_open()
        results = [False] * n
        chunk: list[int] = []
        chunk_bytes = 0
        for i in range(n + 1):
            size = record_blocks(len(payloads[i])) * BLOCK if i < n else 0
            if chunk and (i == n or chunk_bytes + size > self._config.max_write_bytes):
                for j, kept in await self._put_chunk(chunk, keys, versions, checksums, payloads):
                    results[j] = kept
                chunk, chunk_bytes = [], 0
            chunk.append(i)
            chunk_bytes += size
        return results

    async def _put_chunk(
        self,
        chunk: list[int],
        keys: Sequence[DiskKey],
        versions: Sequence[int],
        checksums: Sequence[int],
        payloads: Sequence[bytes],
    ) -> list[tuple[int, bool]]:
        nbytes = sum(record_blocks(len(payloads[i])) * BLOCK for i in chunk)
        await self._budget.acquire(nbytes)
        try:
            self._check_open()
            out, writes = self._index.plan(chunk, keys, versions, checksums, payloads)
        except BaseException:
            self._budget.release(nbytes)
            raise
        if not writes:
            self._budget.release(nbytes)
            return out
        runs = contiguous(writes)

        def abandoned(_: object) -> None:
            # The caller gave up, so it takes the store as failed: land nothing, and the older
            # copy goes as with any failed store.
            self._index.land(runs, [False] * len(runs), failed="abandoned_writes")
            self._budget.release(nbytes)

        began = time.perf_counter()
        try:
            ok = await self._in_thread(self._write_runs, runs, abandoned=abandoned)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._index.land(runs, [False] * len(runs))
            self._budget.release(nbytes)
            raise
        self._write_seconds += time.perf_counter() - began
        out += self._index.land(runs, ok)
        self._budget.release(nbytes)
        return out

    async def get_many(self, keys: Sequence[DiskKey]) -> list[Loaded | None]:
        """(version, checksum, payload) per key, or None: absent, unreadable or corrupt (counted
        apart); never bytes other than the ones stored."""
        for key in keys:
            check_key(key)
        self._check_open()
        out: list[Loaded | None] = [None] * len(keys)
        found = [(i, e) for i, key in enumerate(keys) if (e := self._index.lookup(key)) is not None]
        self._counts["load_misses"] += len(keys) - len(found)
        if not found:
            return out
        epoch = self._index.enter_read()  # no await since the lookups: their extents are held
        began = time.perf_counter()
        got = await self._read_entries([e for _, e in found], epoch)
        self._latency.observe(time.perf_counter() - began)
        for (i, entry), data in zip(found, got, strict=True):
            payload = self._verify(entry, data)
            if payload is None:
                self._counts["load_misses"] += 1
                continue
            self._counts["loads"] += 1
            self._counts["loaded_bytes"] += len(payload)
            out[i] = (entry.version, entry.checksum, payload)
        return out

    def drop_many(self, keys: Sequence[DiskKey], versions: Sequence[int] | None = None) -> int:
        """Drop each key (only if its stored version is at most the given one); writes of it in
        flight at or below that version land dropped. Returns how many records went."""
        if versions is not None and len(versions) != len(keys):
            raise InvalidPage("keys and versions differ in length")
        for key in keys:
            check_key(key)
        self._check_open()
        return sum(
            self._index.drop(key, None if versions is None else versions[k])
            for k, key in enumerate(keys)
        )

    def drop_area(self, scope: int, area: int) -> int:
        """Drop every page of (scope, area), writes in flight included; returns how many."""
        check_key((scope, area, 0))
        self._check_open()
        return self._index.drop_area(scope, area)

    # -- compaction and counters -----------------------------------------------------------

    async def compact(self, max_bytes: int = 1 << 20) -> int:
        """Move live records from the file's end into free runs lower down, about `max_bytes`
        of them (a bounded pause); returns bytes moved. A record overwritten or dropped while it
        moves stays overwritten or dropped: the copy is let go."""
        self._check_open()
        max_blocks = max(1, min(max_bytes, self._config.max_write_bytes) // BLOCK)
        async with self._compacting:
            nbytes = max_blocks * BLOCK
            await self._budget.acquire(nbytes)
            # From here on _move gives the bytes back, once its writes are done.
            return await self._move(max_blocks, nbytes)

    async def _move(self, max_blocks: int, nbytes: int) -> int:
        try:
            self._check_open()
            moves = self._index.plan_moves(max_blocks)
        except BaseException:
            self._budget.release(nbytes)
            raise
        if not moves:
            self._budget.release(nbytes)
            return 0
        epoch = self._index.enter_read()  # no await since plan_moves: the records are held
        try:
            got = await self._read_entries([old for old, _ in moves], epoch)
            # The file may have been closed while we read: no write after that.
            self._check_open()
        except BaseException:
            self._index.land_moves(moves, [False] * len(moves))
            self._budget.release(nbytes)
            raise
        writes = []
        for k, ((old, new), data) in enumerate(zip(moves, got, strict=True)):
            if self._verify(old, data) is not None:
                assert isinstance(data, bytes)
                entry = Entry(old.key, new, old.blocks, old.version, old.checksum, old.length)
                writes.append(Write(k, entry, data))
        runs = contiguous(writes)
        ok_writes = [False] * len(moves)

        def landed(ok: list[bool] | None) -> int:
            for run, written in zip(runs, ok or [False] * len(runs), strict=True):
                for w in run:
                    ok_writes[w.index] = written
            self._budget.release(nbytes)
            return self._index.land_moves(moves, ok_writes)

        if not runs:
            return landed([])
        try:
            ok = await self._in_thread(self._write_runs, runs, abandoned=landed)
        except asyncio.CancelledError:
            raise
        except BaseException:
            landed(None)
            raise
        return landed(ok)

    def statistics(self) -> dict[str, int | float]:
        """Counters in zswap's and Dask's words, the file's use and disk load latency (us)."""
        alloc = self._index.alloc.statistics()
        return {
            "stored_pages": self._index.stored_pages,
            "stored_bytes": self._index.stored_bytes,
            "used_bytes": alloc.used_blocks * BLOCK,
            "file_bytes": alloc.total_blocks * BLOCK,
            "free_bytes": alloc.free_blocks * BLOCK,
            "largest_free_bytes": alloc.largest_free_blocks * BLOCK,
            "fragmentation": alloc.fragmentation,
            **self._counts,
            "pool_limit_hit": self._counts["reject_full"],
            # Dask's dask_worker_spill_{count,bytes,time_seconds}_total{activity=disk_write|
            # disk_read}, one key per (activity, measure).
            "disk_write_count": self._counts["written_back_pages"],
            "disk_write_bytes": self._counts["written_bytes"],
            "disk_write_seconds": self._write_seconds,
            "disk_read_count": self._counts["loads"],
            "disk_read_bytes": self._counts["loaded_bytes"],
            "disk_read_seconds": self._latency.sum,
            "inflight_bytes": self._budget.used,
            "inflight_peak_bytes": self._budget.peak,
            "inflight_limit_bytes": self._budget.limit,
            "waiting_writers": self._budget.waiting,
            "load_p50_us": round(self._latency.quantile(0.5) * 1e6),
            "load_p99_us": round(self._latency.quantile(0.99) * 1e6),
        }
