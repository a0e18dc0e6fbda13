"""DiskStore on real files: round trips, newest wins, space, faults, backpressure, a model."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.disk import BLOCK, DiskConfig, DiskError, DiskFull, DiskKey, DiskStore
from ramster.disk.layout import record_blocks
from ramster.errors import InvalidPage
from ramster.pagestore import checksum
from tests.disk.faults import SMALL, FaultyIo, payload, put


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[DiskStore]:
    s = await DiskStore.open(tmp_path / "pages", 4 << 20)
    yield s
    await s.close()


@pytest.mark.asyncio
async def test_round_trip_and_counters(store: DiskStore) -> None:
    items = [((1, 0, i), 1, payload((1, 0, i), 1)) for i in range(60)]
    assert await put(store, items) == [True] * 60
    got = await store.get_many([k for k, _, _ in items] + [(1, 0, 999), (2, 0, 0)])
    assert got[:60] == [(1, checksum(p), p) for _, _, p in items]
    assert got[60:] == [None, None]
    st = store.statistics()
    assert st["stored_pages"] == st["written_back_pages"] == st["disk_write_count"] == 60
    assert st["stored_bytes"] == sum(len(p) for _, _, p in items)
    assert st["loads"] == 60
    assert st["load_misses"] == 2
    assert st["file_bytes"] == 4 << 20
    assert st["used_bytes"] == sum(record_blocks(len(p)) * BLOCK for _, _, p in items)
    assert 0 < st["load_p50_us"] <= st["load_p99_us"]
    assert st["disk_read_count"] == 60
    assert st["disk_write_bytes"] == st["disk_read_bytes"] == st["stored_bytes"]
    assert st["disk_write_seconds"] > 0
    assert st["disk_read_seconds"] > 0
    assert st["corrupt_records"] == st["read_errors"] == st["reject_full"] == 0


@pytest.mark.asyncio
async def test_newest_version_wins(store: DiskStore) -> None:
    key = (7, 1, 5)
    v5, v3, v7 = payload(key, 5), payload(key, 3), payload(key, 7)
    assert await put(store, [(key, 5, v5)]) == [True]
    assert await put(store, [(key, 3, v3)]) == [False], "an older version is not kept"
    assert await put(store, [(key, 5, v5)]) == [True], "the same version again is kept"
    assert await store.get_many([key]) == [(5, checksum(v5), v5)]
    # In one batch, the newest of a key's versions is the one kept.
    assert await put(store, [(key, 7, v7), (key, 6, payload(key, 6))]) == [True, False]
    assert await store.get_many([key]) == [(7, checksum(v7), v7)]
    assert store.drop_many([key], [6]) == 0, "a drop of an older version keeps a newer one"
    assert store.drop_many([key], [7]) == 1
    assert await store.get_many([key]) == [None]
    assert store.statistics()["stored_pages"] == 0


@pytest.mark.asyncio
async def test_overwrites_reuse_the_space_they_free(tmp_path: Path) -> None:
    size = 1000  # 3 blocks a record
    store = await DiskStore.open(tmp_path / "f", 20 * 3 * BLOCK)
    keys = [(0, 0, i) for i in range(10)]
    for version in range(1, 30):
        items = [(k, version, payload(k, version, size)) for k in keys]
        assert await put(store, items) == [True] * 10
        assert store.statistics()["used_bytes"] == 10 * 3 * BLOCK
    got = await store.get_many(keys)
    assert [g and g[0] for g in got] == [29] * 10
    assert store.statistics()["reject_full"] == 0
    await store.close()


@pytest.mark.asyncio
async def test_a_full_store_refuses_counts_and_never_raises(tmp_path: Path) -> None:
    store = await DiskStore.open(tmp_path / "f", 16 * BLOCK)
    items = [((0, 0, i), 1, payload((0, 0, i), 1, 700)) for i in range(12)]  # 2 blocks each
    kept = await put(store, items)
    assert kept == [True] * 8 + [False] * 4
    st = store.statistics()
    assert st["reject_full"] == st["pool_limit_hit"] == 4
    assert st["free_bytes"] == 0
    # An overwrite with no room for its new copy fails, and the old copy goes too.
    assert await put(store, [((0, 0, 0), 2, payload((0, 0, 0), 2, 700))]) == [False]
    assert await store.get_many([(0, 0, 0)]) == [None]
    got = await store.get_many([k for k, _, _ in items[1:8]])
    assert got == [(1, checksum(p), p) for _, _, p in items[1:8]]
    await store.close()


@pytest.mark.asyncio
async def test_no_room_for_the_budget_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(DiskFull) as info:
        await DiskStore.open(tmp_path / "f", 1 << 20)
    assert isinstance(info.value, OSError)
    assert not (tmp_path / "f").exists()
    with pytest.raises(ValueError, match="below one block"):
        await DiskStore.open(tmp_path / "g", BLOCK - 1)


@pytest.mark.asyncio
async def test_a_reopened_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "f"
    first = await DiskStore.open(path, 64 * BLOCK)
    assert await put(first, [((0, 0, 1), 1, b"x" * 100)]) == [True]
    await first.close()
    await first.close()  # idempotent
    with pytest.raises(DiskError):
        await first.get_many([(0, 0, 1)])
    second = await DiskStore.open(path, 64 * BLOCK)
    assert await second.get_many([(0, 0, 1)]) == [None]
    assert path.stat().st_size == 64 * BLOCK
    await second.close()


def _flip(path: Path, needle: bytes, delta: int) -> None:
    """Flip one byte of the file, `delta` bytes after where `needle` starts."""
    at = path.read_bytes().index(needle) + delta
    fd = os.open(path, os.O_RDWR)
    try:
        (byte,) = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte ^ 0x40]), at)
    finally:
        os.close(fd)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "delta", [0, 500, -56, -40, -24, -8], ids=["payload", "end", "magic", "area", "version", "seal"]
)
async def test_a_corrupted_record_is_a_counted_miss(tmp_path: Path, delta: int) -> None:
    path = tmp_path / "f"
    store = await DiskStore.open(path, 1 << 20)
    items = [((3, 1, i), 4, payload((3, 1, i), 4, 501)) for i in range(5)]
    assert await put(store, items) == [True] * 5
    _flip(path, items[2][2], delta)
    got = await store.get_many([k for k, _, _ in items])
    assert got[2] is None
    assert [g for i, g in enumerate(got) if i != 2] == [
        (4, checksum(p), p) for i, (_, _, p) in enumerate(items) if i != 2
    ]
    # It stays a failure (counted each time), not a silent absence.
    assert await store.get_many([items[2][0]]) == [None]
    st = store.statistics()
    assert st["corrupt_records"] == 2
    assert st["stored_pages"] == 5
    assert st["load_misses"] == 2
    await store.close()


@pytest.mark.asyncio
async def test_a_truncated_file_is_a_short_read_and_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "f"
    store = await DiskStore.open(path, 1 << 20)
    items = [((0, 0, i), 1, payload((0, 0, i), 1, 1000)) for i in range(10)]
    assert await put(store, items) == [True] * 10
    os.truncate(path, 5 * 1000 + 100)  # somewhere inside the fourth record
    got = await store.get_many([k for k, _, _ in items])
    assert got[:3] == [(1, checksum(p), p) for _, _, p in items[:3]]
    assert got[3:] == [None] * 7
    assert store.statistics()["read_errors"] == 7
    await store.close()


@pytest.mark.asyncio
async def test_io_errors_are_counted_misses_and_refusals(tmp_path: Path) -> None:
    io = FaultyIo()
    store = await DiskStore.open(tmp_path / "f", 1 << 20, io=io)
    key = (1, 1, 1)
    assert await put(store, [(key, 1, b"a" * 900)]) == [True]
    io.read_error = errno.EIO
    assert await store.get_many([key]) == [None]
    assert store.statistics()["read_errors"] == 1
    io.read_error = None
    io.write_error = errno.ENOSPC
    assert await put(store, [(key, 2, b"b" * 900), ((1, 1, 2), 1, b"c")]) == [False, False]
    st = store.statistics()
    assert st["write_errors"] == 2
    assert st["stored_pages"] == 0, "a failed overwrite drops the older copy"
    assert st["used_bytes"] == 0, "the failed writes' space is free again"
    io.write_error = None
    assert await store.get_many([key]) == [None]
    await store.close()


@pytest.mark.asyncio
async def test_a_slow_disk_makes_writers_wait_within_the_bound(tmp_path: Path) -> None:
    io = FaultyIo()
    io.write_delay = 0.02
    store = await DiskStore.open(tmp_path / "f", 4 << 20, config=SMALL, io=io)
    limit = SMALL.max_inflight_bytes
    batches = [
        [((0, b, i), 1, payload((0, b, i), 1, 1500)) for i in range(8)]  # 4 blocks each
        for b in range(12)
    ]
    tasks = [asyncio.create_task(put(store, items)) for items in batches]
    seen_waiting = 0
    while not all(t.done() for t in tasks):
        st = store.statistics()
        assert st["inflight_bytes"] <= limit
        seen_waiting = max(seen_waiting, int(st["waiting_writers"]))
        await asyncio.sleep(0.005)
    assert [await t for t in tasks] == [[True] * 8] * 12
    st = store.statistics()
    assert seen_waiting > 0, "writers waited for the slow disk"
    assert 0 < st["inflight_peak_bytes"] <= limit
    assert io.most_writing <= limit
    assert st["inflight_bytes"] == 0
    # Each batch of 8 records (16 KiB) went out in 8 KiB writes: bounded, and batched.
    assert store.statistics()["written_back_pages"] == 96
    await store.close()


@pytest.mark.asyncio
async def test_a_cancelled_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    io = FaultyIo()
    io.write_delay = 0.05
    store = await DiskStore.open(tmp_path / "f", 1 << 20, config=SMALL, io=io)
    key = (0, 0, 1)
    assert await put(store, [(key, 1, b"old" * 100)]) == [True]
    task = asyncio.create_task(put(store, [(key, 2, b"new" * 100)]))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()  # waits for the abandoned write
    st = store.statistics()
    assert st["inflight_bytes"] == 0
    assert st["stored_pages"] == 0, "a cancelled overwrite counts as failed: the old copy goes"
    assert st["used_bytes"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(4))
async def test_random_operations_match_a_dict(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = await DiskStore.open(tmp_path / "f", 96 * BLOCK)
    model: dict[DiskKey, tuple[int, int, bytes]] = {}
    keys = [(s, a, o) for s in range(2) for a in range(2) for o in range(12)]
    versions = dict.fromkeys(keys, 0)

    async def put_some() -> None:
        batch = rng.sample(keys, rng.randint(1, 6))
        items = []
        for k in batch:
            if rng.random() < 0.15 and versions[k]:
                v = rng.randint(0, versions[k])  # an old or repeated version
            else:
                versions[k] += 1
                v = versions[k]
            size = rng.choice([8, 100, 700, 2000, rng.randint(1, 4096)])
            p = model[k][2] if k in model and model[k][0] == v else payload(k, v, size)
            items.append((k, v, p))
        rejected = store.statistics()["reject_full"]
        kept = await put(store, items)
        full = store.statistics()["reject_full"] - rejected
        for (k, v, p), ok in zip(items, kept, strict=True):
            if k in model and v <= model[k][0]:
                assert ok == (v == model[k][0]), (k, v)
            elif ok:
                model[k] = (v, checksum(p), p)
            else:
                full -= 1
                model.pop(k, None)
        assert full == 0, "a newer version was refused without a full store"

    for _ in range(250):
        op = rng.random()
        if op < 0.45:
            await put_some()
        elif op < 0.65:
            ask = rng.sample(keys, rng.randint(1, 10))
            assert await store.get_many(ask) == [model.get(k) for k in ask]
        elif op < 0.8:
            some = rng.sample(keys, rng.randint(1, 4))
            upto = [rng.randint(0, versions[k] + 1) for k in some]
            gone = [k for k, u in zip(some, upto, strict=True) if k in model and model[k][0] <= u]
            assert store.drop_many(some, upto) == len(gone)
            for k in gone:
                del model[k]
        elif op < 0.85:
            scope, area = rng.randrange(2), rng.randrange(2)
            gone = [k for k in model if k[:2] == (scope, area)]
            assert store.drop_area(scope, area) == len(gone)
            for k in gone:
                del model[k]
        else:
            await asyncio.gather(store.compact(rng.choice([512, 4096, 1 << 20])), put_some())
        st = store.statistics()
        assert st["stored_pages"] == len(model)
        assert st["stored_bytes"] == sum(len(p) for _, _, p in model.values())
        assert st["used_bytes"] == sum(record_blocks(len(p)) * BLOCK for _, _, p in model.values())
    assert await store.get_many(keys) == [model.get(k) for k in keys]
    assert store.statistics()["corrupt_records"] == 0
    await store.close()


@pytest.mark.asyncio
async def test_bad_calls_change_nothing(store: DiskStore) -> None:
    with pytest.raises(InvalidPage):
        await put(store, [((0, 0, 1), 1, b"a"), ((0, 1 << 32, 0), 1, b"b")])
    with pytest.raises(InvalidPage):
        await store.put_many([(0, 0, 1)], [1, 2], [0], [b"a"])
    with pytest.raises(InvalidPage):
        await put(store, [((0, 0, 1), 1, bytes(DiskConfig().max_payload + 1))])
    with pytest.raises(InvalidPage):
        await put(store, [((0, 0, 1), -1, b"a")])
    with pytest.raises(InvalidPage):
        store.drop_many([(0, 0, 1)], [1, 2])
    assert store.statistics()["stored_pages"] == 0


@pytest.mark.asyncio
async def test_a_batch_is_one_write_and_neighbours_one_read(tmp_path: Path) -> None:
    io = FaultyIo()
    store = await DiskStore.open(tmp_path / "f", 1 << 20, io=io)
    keys = [(0, 0, i) for i in range(40)]
    assert await put(store, [(k, 1, payload(k, 1)) for k in keys]) == [True] * 40
    assert io.calls == {"pwritev": 1, "pread": 0}
    got = await store.get_many(keys[::-1])
    assert [g and g[2] for g in got] == [payload(k, 1) for k in keys[::-1]]
    assert io.calls["pread"] == 1
    assert store.drop_many(keys[10:30]) == 20  # a gap far wider than read_gap_blocks
    await store.get_many(keys)
    assert io.calls["pread"] == 3
    await store.close()


@pytest.mark.asyncio
async def test_without_fallocate_the_file_is_sparse_but_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    store = await DiskStore.open(tmp_path / "f", 1 << 20)
    assert (tmp_path / "f").stat().st_size == 1 << 20
    assert await put(store, [((0, 0, 0), 1, b"page")]) == [True]
    assert await store.get_many([(0, 0, 0)]) == [(1, checksum(b"page"), b"page")]
    await store.close()
