"""Small batches take plain-int paths: the same operations leave exactly the same pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramster.frontswap import LocalFrontswap
from ramster.pagestore import PagePool, PoolConfig, codec, encode
from ramster.pagestore import core as pool_module
from ramster.pagestore.codec import EMPTY, REMOTE
from ramster.pagestore.index import RadixIndex
from ramster.testing import corpus

PAGE = 512
OFFSETS = st.one_of(st.integers(0, 300), st.integers(0, (1 << 32) - 1))


@contextmanager
def vectorised() -> Iterator[None]:
    """Every batch through the numpy path, however small."""
    saved = pool_module.SMALL_BATCH
    pool_module.SMALL_BATCH = 0
    try:
        yield
    finally:
        pool_module.SMALL_BATCH = saved


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["zero", "same", "text", "random"]))
    if kind == "zero":
        return bytes(PAGE)
    if kind == "same":
        return draw(st.binary(min_size=8, max_size=8)) * (PAGE // 8)
    if kind == "text":
        word = draw(st.binary(min_size=1, max_size=24))
        return (word * (PAGE // len(word) + 1))[:PAGE]
    return draw(st.binary(min_size=PAGE, max_size=PAGE))


def keys(min_size: int = 1) -> st.SearchStrategy[list[int]]:
    return st.lists(OFFSETS, min_size=min_size, max_size=12, unique=True)


AREAS = st.integers(0, 2)
OPS = st.one_of(
    st.tuples(st.just("put"), AREAS, st.lists(st.tuples(OFFSETS, pages()), max_size=12)),
    st.tuples(st.just("put_stored"), AREAS, st.lists(st.tuples(OFFSETS, pages()), max_size=12)),
    st.tuples(st.just("get"), AREAS, keys(0), st.booleans()),
    st.tuples(st.just("get_stored"), AREAS, keys(0)),
    st.tuples(st.just("versions"), AREAS, keys(0)),
    st.tuples(st.just("drop"), AREAS, st.lists(OFFSETS, max_size=12)),
    st.tuples(st.just("spill"), st.integers(1, 8), st.integers(0, 3)),
    st.tuples(st.just("put_remote"), AREAS, keys(0), st.integers(0, 3)),
    st.tuples(st.just("remote_entries"), AREAS, keys(0)),
    st.tuples(
        st.just("drain"),
    ),
    st.tuples(st.just("drop_area"), AREAS, st.booleans()),
)


def apply(pool: PagePool, op: tuple[Any, ...], version: int) -> object:
    name = op[0]
    if name in ("put", "put_stored"):
        batch = dict(op[2])  # distinct keys, as the pool requires
        offs, pgs = list(batch), list(batch.values())
        versions = list(range(version, version + len(offs)))
        if name == "put":
            return pool.put_many(op[1], offs, pgs, versions)
        payloads = [encode(p, pool.config) for p in pgs]
        sums = [codec.checksum(p) for p in pgs]
        return pool.put_stored_many(op[1], offs, payloads, versions, sums)
    if name == "get":
        return pool.get_many(op[1], op[2], op[3])
    if name == "get_stored":
        return pool.get_stored_many(op[1], op[2])
    if name == "versions":
        return pool.versions(op[1], op[2])
    if name == "drop":
        return pool.drop_many(op[1], op[2])
    if name == "spill":
        cold = pool.coldest(op[1])
        by_area: dict[int, list[Any]] = {}
        for c in cold:
            by_area.setdefault(c.area, []).append(c)
        return [
            pool.mark_remote(a, [c.offset for c in cs], [c.version for c in cs], op[2])
            for a, cs in sorted(by_area.items())
        ]
    if name == "put_remote":
        offs = op[2]
        versions = list(range(version, version + len(offs)))
        return pool.put_remote(op[1], offs, versions, [v * 7 for v in versions], op[3])
    if name == "remote_entries":
        return pool.remote_entries(op[1], op[2])
    if name == "drain":
        return pool.drain_remote_drops()
    return pool.drop_area(op[1], op[2])


def state(pool: PagePool) -> object:
    """Everything a pool holds, down to slot numbers, free lists and index rows."""
    hw = pool._hw
    index = pool._index
    return (
        pool.statistics(),
        pool._alloc.statistics(),
        {name: arr[:hw].tolist() for name, arr in pool._meta.items()},
        pool._free_slots.tolist(),
        pool._tick,
        pool._remote_drops,
        dict(index._rows),
        index._leaves.tolist(),
        index._leaf_live.tolist(),
        index._free_rows,
        index.nbytes,
        pool.area_counts(),
        kept_counts(pool),
    )


def kept_counts(pool: PagePool) -> tuple[dict[int, int], dict[int, int]]:
    """The pool's kept counts (pages per area, remote pages per holder set), checked against a
    scan of its slots."""
    m = pool._meta
    kinds = m["kind"][: pool._hw]
    live = kinds != EMPTY
    areas, per_area = np.unique(m["area"][: pool._hw][live], return_counts=True)
    remote = kinds == REMOTE
    sets, per_set = np.unique(m["handle"][: pool._hw][remote], return_counts=True)
    scanned_areas = dict(zip(areas.tolist(), per_area.tolist(), strict=True))
    scanned_sets = dict(zip(sets.tolist(), per_set.tolist(), strict=True))
    assert {a: pool.area_pages(a) for a in scanned_areas} == scanned_areas
    assert sum(pool._area_pages.values()) == int(np.count_nonzero(live))
    assert pool.remote_set_counts() == scanned_sets
    return dict(pool._area_pages), pool.remote_set_counts()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=40), budget=st.sampled_from([6 << 10, 24 << 10, 1 << 20]))
def test_small_and_vectorised_paths_leave_identical_pools(
    ops: list[tuple[Any, ...]], budget: int
) -> None:
    config = PoolConfig(page_size=PAGE, budget_bytes=budget)
    small, large = PagePool(config), PagePool(config)
    version = 1
    for op in ops:
        got = apply(small, op, version)
        with vectorised():
            assert apply(large, op, version) == got
        version += 20
        assert state(small) == state(large)


def test_numpy_offsets_take_the_small_path_too() -> None:
    pool = PagePool(PoolConfig(page_size=PAGE))
    page = bytes(range(256)) * 2
    offs = np.asarray([3, 70, 5], dtype=np.int64)
    assert pool.put_many(0, offs, [page] * 3, [1, 2, 3]) == [True] * 3
    assert pool.get_many(0, offs) == [page] * 3
    assert pool.versions(0, np.asarray([70, 4])) == [2, None]
    assert pool.drop_many(0, offs) == 3
    assert pool.statistics().stored_pages == 0


def test_drops_in_an_area_without_pages_change_nothing() -> None:
    pool = PagePool(PoolConfig(page_size=PAGE))
    pool.put_many(0, [1], [bytes(PAGE)], [1])
    before = state(pool)
    assert pool.drop_many(1, list(range(100_000))) == 0
    assert pool.drop_many(1, [1]) == 0
    assert state(pool) == before


def test_a_batch_makes_rows_only_for_leaves_that_get_a_key() -> None:
    for offsets in ([0, 128], [0, 64 * 30]):
        index = RadixIndex()
        before = index.nbytes
        growth = index.growth_bytes(0, np.asarray(offsets, dtype=np.int64))
        index.assign(0, np.asarray(offsets, dtype=np.int64), np.asarray([5, 6], dtype=np.int32))
        assert index.nbytes - before == growth
        assert len(index._rows) == 2
        index.remove(0, np.asarray(offsets, dtype=np.int64))
        assert not index._rows
        assert not index.has_area(0)


def counters(fs: LocalFrontswap) -> tuple[int, ...]:
    st_ = fs.statistics().pool
    return (
        st_.stored_pages,
        st_.same_filled_pages,
        st_.huge_pages,
        st_.compr_data_size,
        st_.succ_stores,
        st_.loads,
        st_.exclusive_loads,
        st_.invalidates,
    )


@pytest.mark.asyncio
async def test_frontswap_batches_of_any_size_agree() -> None:
    pages = corpus.pages(300, seed=5)
    offsets = [(i * 37) % 1000 for i in range(300)]
    one, many = LocalFrontswap(), LocalFrontswap()
    for fs in (one, many):
        await fs.init(0)
    assert await one.store_many(0, offsets, pages) == [True] * 300
    for i in range(0, 300, 7):
        assert await many.store_many(0, offsets[i : i + 7], pages[i : i + 7]) == [True] * len(
            pages[i : i + 7]
        )
    assert counters(one) == counters(many)
    wanted = list(range(1000))
    got = await one.load_many(0, wanted)
    assert [p for i in range(0, 1000, 5) for p in await many.load_many(0, wanted[i : i + 5])] == got
    await one.invalidate_many(0, wanted[::3])
    for i in range(0, 1000, 3 * 9):
        await many.invalidate_many(0, wanted[i : i + 3 * 9 : 3])
    assert counters(one) == counters(many)
    assert await one.load_many(0, wanted[:40], exclusive=True) == await many.load_many(
        0, wanted[:40], exclusive=True
    )
    assert counters(one) == counters(many)
