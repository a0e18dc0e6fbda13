"""The pool: same-filled pages, lz4, raw pages, counters, cold-first order."""

from __future__ import annotations

import os

import pytest

from ramster.pagestore import PagePool, PoolConfig
from ramster.pagestore.codec import LZ4, RAW, SAME
from ramster.testing import corpus


def put(pool: PagePool, offsets: list[int], pages: list[bytes], area: int = 0) -> list[bool]:
    return pool.put_many(area, offsets, pages, list(range(1, len(pages) + 1)))


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 16384, 65536])
def test_every_page_size_round_trips(page_size: int) -> None:
    pool = PagePool(PoolConfig(page_size=page_size, budget_bytes=64 << 20))
    pages = corpus.pages(64, seed=3, page_size=page_size)
    assert all(put(pool, list(range(64)), pages))
    assert pool.get_many(0, list(range(64))) == pages


@pytest.mark.parametrize("bad", [0, 100, 511, 3000, 131072, 4095])
def test_page_size_must_be_a_power_of_two_in_range(bad: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        PoolConfig(page_size=bad)


def test_same_filled_pages_keep_only_their_pattern() -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    zero = bytes(4096)
    ones = b"\xff" * 4096
    word = b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512
    almost = bytearray(word)
    almost[-1] ^= 1
    assert all(put(pool, [0, 1, 2, 3], [zero, ones, word, bytes(almost)]))
    st = pool.statistics()
    assert st.same_filled_pages == 3
    assert st.compr_data_size < 4096  # only the almost-same page has a payload
    assert pool.get_many(0, [0, 1, 2, 3]) == [zero, ones, word, bytes(almost)]


def test_incompressible_pages_are_kept_raw_or_refused() -> None:
    rnd = [os.urandom(4096) for _ in range(4)]
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    assert all(put(pool, [0, 1, 2, 3], rnd))
    assert pool.statistics().huge_pages == 4
    assert pool.get_many(0, [0, 1, 2, 3]) == rnd

    strict = PagePool(PoolConfig(budget_bytes=8 << 20, keep_incompressible=False))
    assert put(strict, [0, 1], rnd[:2]) == [False, False]
    st = strict.statistics()
    assert st.reject_compress_poor == 2
    assert st.failed_stores == 2
    assert st.stored_pages == 0


def test_compress_threshold_decides_raw() -> None:
    page = corpus.pages(40, seed=5)[-1]
    pages = [p for p in corpus.pages(400, seed=5) if p[:8] * 512 != p][:50]
    tight = PagePool(PoolConfig(budget_bytes=8 << 20, compress_threshold=0.05))
    put(tight, list(range(len(pages))), pages)
    assert tight.statistics().huge_pages == len(pages)
    loose = PagePool(PoolConfig(budget_bytes=8 << 20, compress_threshold=0.99))
    put(loose, [0], [page])
    assert loose.get_many(0, [0]) == [page]


def test_counters_follow_operations() -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    pages = corpus.pages(100, seed=2)
    put(pool, list(range(100)), pages)
    pool.get_many(0, list(range(50)))
    pool.get_many(0, list(range(50, 60)), exclusive=True)
    pool.drop_many(0, list(range(60, 70)))
    st = pool.statistics()
    assert st.succ_stores == 100
    assert st.loads == 60
    assert st.exclusive_loads == 10
    assert st.invalidates == 10
    assert st.stored_pages == 80
    assert st.orig_data_size == 80 * 4096
    assert pool.get_many(0, [55, 65, 75]) == [None, None, pages[75]]


def test_overwrite_replaces_and_frees() -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    a, b = os.urandom(4096), corpus.pages(10, seed=9)[4]
    put(pool, [7], [a])
    pool.put_many(0, [7], [b], [2])
    assert pool.get_many(0, [7]) == [b]
    assert pool.versions(0, [7, 8]) == [2, None]
    st = pool.statistics()
    assert st.stored_pages == 1
    assert st.huge_pages == 0
    assert st.compr_data_size < 4096


def test_drop_area_leaves_other_areas() -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    pages = corpus.pages(300, seed=4)
    put(pool, list(range(0, 3000, 10)), pages, area=1)
    put(pool, list(range(300)), pages, area=2)
    assert pool.drop_area(1) == 300
    assert pool.get_many(1, [0, 10]) == [None, None]
    assert pool.get_many(2, list(range(300))) == pages
    assert pool.statistics().stored_pages == 300


def test_coldest_pages_come_first() -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    pages = [os.urandom(2048) * 2 for _ in range(10)]
    for i, page in enumerate(pages):
        pool.put_many(0, [i], [page], [i + 100])
    pool.get_many(0, [0, 1])  # warm the first two again
    cold = pool.coldest(3)
    assert [c.offset for c in cold] == [2, 3, 4]
    assert all(c.kind in (LZ4, RAW) for c in cold)
    assert cold[0].version == 102
    all_pages = pool.coldest(100)
    assert [c.offset for c in all_pages][-2:] == [0, 1]
    put(pool, [50], [bytes(4096)])
    assert all(c.kind != SAME for c in pool.coldest(100))
    assert any(c.kind == SAME for c in pool.coldest(100, include_same_filled=True))


def test_metadata_is_compact() -> None:
    pool = PagePool(PoolConfig(budget_bytes=256 << 20))
    n = 20000
    pages = corpus.pages(n, seed=6)
    for i in range(0, n, 500):
        put(pool, list(range(i, i + 500)), pages[i : i + 500])
    st = pool.statistics()
    assert st.metadata_size / st.stored_pages <= 64
