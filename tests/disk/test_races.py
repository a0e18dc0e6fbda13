"""DiskStore under concurrency: compaction, drops and reads racing writes never resurrect or
mix up bytes, and close waits for the I/O in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ramster.disk import BLOCK, DiskError, DiskStore, OsIo
from ramster.pagestore import checksum
from tests.disk.faults import GatedIo, held, payload, put, sparse_store


@pytest.mark.asyncio
async def test_compaction_moves_the_tail_into_holes(tmp_path: Path) -> None:
    store, live = await sparse_store(tmp_path / "f", OsIo())
    before = store.statistics()
    assert before["fragmentation"] > 0
    assert await store.compact(3 * BLOCK) == 3 * BLOCK, "bounded: one record this call"
    moved = await store.compact(1 << 20)
    after = store.statistics()
    assert moved == 19 * 3 * BLOCK
    assert after["fragmentation"] == 0.0
    assert after["largest_free_bytes"] == after["free_bytes"] == (1 << 20) - 20 * 3 * BLOCK
    assert after["compactions"] == 2
    assert after["moved_bytes"] == 20 * 3 * BLOCK
    assert await store.compact() == 0, "nothing left to move"
    got = await store.get_many(live)
    assert got == [(1, checksum(p), p) for p in (payload(k, 1, 1000) for k in live)]
    await store.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("phase", ["read", "write"])
async def test_compaction_never_resurrects_what_changed_while_it_moved(
    tmp_path: Path, phase: str
) -> None:
    io = GatedIo()
    store, live = await sparse_store(tmp_path / "f", io)
    newest, dropped, dropped_by_version = live[-1], live[-2], live[-3]
    io.hold_next = phase
    compaction = asyncio.create_task(store.compact(1 << 20))
    await held(io)
    fresh = payload(newest, 2, 1000)
    assert await put(store, [(newest, 2, fresh)]) == [True]
    assert store.drop_many([dropped]) == 1
    assert store.drop_many([dropped_by_version], [1]) == 1
    io.go.set()
    assert await compaction == 17 * 3 * BLOCK
    assert await store.get_many([newest, dropped, dropped_by_version]) == [
        (2, checksum(fresh), fresh),
        None,
        None,
    ]
    rest = live[:-3]
    assert await store.get_many(rest) == [
        (1, checksum(payload(k, 1, 1000)), payload(k, 1, 1000)) for k in rest
    ]
    st = store.statistics()
    assert st["stored_pages"] == 18
    assert st["used_bytes"] == 18 * 3 * BLOCK, "the copies let go are free again"
    await store.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["key", "version", "area"])
async def test_a_drop_during_the_write_wins(tmp_path: Path, how: str) -> None:
    io = GatedIo()
    store = await DiskStore.open(tmp_path / "f", 1 << 20, io=io)
    key = (5, 6, 7)
    assert await put(store, [(key, 1, b"one" * 100)]) == [True]
    io.hold_next = "write"
    writer = asyncio.create_task(put(store, [(key, 2, b"two" * 100)]))
    await held(io)
    if how == "key":
        assert store.drop_many([key]) == 1
    elif how == "version":
        assert store.drop_many([key], [2]) == 1
    else:
        assert store.drop_area(5, 6) == 1
    # The same version again is refused now: it would land dropped.
    assert await put(store, [(key, 2, b"two" * 100)]) == [False]
    io.go.set()
    assert await writer == [True], "kept, then dropped"
    assert await store.get_many([key]) == [None]
    st = store.statistics()
    assert st["stored_pages"] == st["used_bytes"] == 0
    assert await put(store, [(key, 3, b"three")]) == [True]
    assert await store.get_many([key]) == [(3, checksum(b"three"), b"three")]
    await store.close()


@pytest.mark.asyncio
async def test_space_under_a_read_is_not_reused_until_it_is_done(tmp_path: Path) -> None:
    io = GatedIo()
    store = await DiskStore.open(tmp_path / "f", 9 * BLOCK, io=io)
    a, b, c, d = ((0, 0, i) for i in range(4))
    data = {k: payload(k, 1, 1000) for k in (a, b, c, d)}  # 3 blocks each: the file holds 3
    assert await put(store, [(k, 1, data[k]) for k in (a, b, c)]) == [True] * 3
    io.hold_next = "read"
    reader = asyncio.create_task(store.get_many([a]))
    await held(io)
    assert store.drop_many([a]) == 1
    assert await put(store, [(d, 1, data[d])]) == [False], "a's space is still being read"
    io.go.set()
    assert await reader == [(1, checksum(data[a]), data[a])]
    assert await put(store, [(d, 1, data[d])]) == [True]
    assert await store.get_many([b, c, d]) == [(1, checksum(data[k]), data[k]) for k in (b, c, d)]
    assert store.statistics()["corrupt_records"] == 0
    await store.close()


@pytest.mark.asyncio
async def test_close_waits_for_the_io_in_flight_and_nothing_writes_after_it(
    tmp_path: Path,
) -> None:
    io = GatedIo()
    store, _ = await sparse_store(tmp_path / "f", io)
    io.hold_next = "read"
    compaction = asyncio.create_task(store.compact(1 << 20))
    await held(io)
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0.01)
    assert not closing.done(), "close waits for the read in flight"
    io.most_writing = 0
    io.go.set()
    await closing
    with pytest.raises(DiskError, match="closed"):
        await compaction
    assert io.most_writing == 0, "no write once the store was closing"
    assert store.statistics()["inflight_bytes"] == 0


@pytest.mark.asyncio
async def test_a_cancelled_compaction_keeps_every_page(tmp_path: Path) -> None:
    io = GatedIo()
    store, live = await sparse_store(tmp_path / "f", io)
    io.hold_next = "write"
    compaction = asyncio.create_task(store.compact(1 << 20))
    await held(io)
    compaction.cancel()
    with pytest.raises(asyncio.CancelledError):
        await compaction
    io.go.set()
    for _ in range(500):  # until the abandoned write has landed
        if not store.statistics()["inflight_bytes"]:
            break
        await asyncio.sleep(0.01)
    st = store.statistics()
    assert st["inflight_bytes"] == 0
    assert st["used_bytes"] == 20 * 3 * BLOCK
    want = [(1, checksum(p), p) for p in (payload(k, 1, 1000) for k in live)]
    assert await store.get_many(live) == want
    await store.close()
