"""Shared pieces of the disk store tests: pages, a put helper, and I/O that misbehaves."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ramster.disk import DiskConfig, DiskKey, DiskStore, OsIo
from ramster.pagestore import checksum

SMALL = DiskConfig(max_inflight_bytes=16 << 10, max_write_bytes=8 << 10, max_payload=4096)


def payload(key: DiskKey, version: int, size: int | None = None) -> bytes:
    """Bytes that differ for every (key, version), of a size that varies with them."""
    rng = random.Random(hash((key, version)))
    return rng.randbytes(size if size is not None else rng.randint(8, 3000))


async def put(store: DiskStore, items: Sequence[tuple[DiskKey, int, bytes]]) -> list[bool]:
    return await store.put_many(
        [k for k, _, _ in items],
        [v for _, v, _ in items],
        [checksum(p) for _, _, p in items],
        [p for _, _, p in items],
    )


class FaultyIo(OsIo):
    """OsIo with errors and delays to order."""

    def __init__(self) -> None:
        self.read_error: int | None = None
        self.write_error: int | None = None
        self.write_delay = 0.0
        self.writing = 0
        self.most_writing = 0
        self.calls = {"pwritev": 0, "pread": 0}
        self._lock = threading.Lock()

    def pwritev(self, fd: int, buffers: Sequence[bytes], offset: int) -> int:
        if self.write_error is not None:
            raise OSError(self.write_error, os.strerror(self.write_error))
        size = sum(map(len, buffers))
        with self._lock:
            self.calls["pwritev"] += 1
            self.writing += size
            self.most_writing = max(self.most_writing, self.writing)
        time.sleep(self.write_delay)
        try:
            return super().pwritev(fd, buffers, offset)
        finally:
            with self._lock:
                self.writing -= size

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        if self.read_error is not None:
            raise OSError(self.read_error, os.strerror(self.read_error))
        with self._lock:
            self.calls["pread"] += 1
        return super().pread(fd, n, offset)


class GatedIo(FaultyIo):
    """FaultyIo that can hold the next read or write until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_next: str | None = None
        self.held = threading.Event()
        self.go = threading.Event()

    def _gate(self, op: str) -> None:
        if self.hold_next == op:
            self.hold_next = None
            self.held.set()
            self.go.wait(5)

    def pwritev(self, fd: int, buffers: Sequence[bytes], offset: int) -> int:
        self._gate("write")
        return super().pwritev(fd, buffers, offset)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        self._gate("read")
        return super().pread(fd, n, offset)


async def held(io: GatedIo) -> None:
    """Until the held call has begun (the gate is a thread's event: wait for it in one)."""
    assert await asyncio.to_thread(io.held.wait, 5)


async def sparse_store(path: Path, io: OsIo) -> tuple[DiskStore, list[DiskKey]]:
    """40 records of 3 blocks side by side, the lower 20 dropped: 20 live ones above a hole."""
    store = await DiskStore.open(path, 1 << 20, io=io)
    keys = [(0, 0, i) for i in range(40)]
    assert await put(store, [(k, 1, payload(k, 1, 1000)) for k in keys]) == [True] * 40
    assert store.drop_many(keys[:20]) == 20
    return store, keys[20:]
