"""Pages in stored form: what an owner ships to a holder and gets back, never recompressed."""

from __future__ import annotations

import os

import pytest

from ramster.pagestore import PagePool, PoolConfig, checksum, expand
from ramster.pagestore.codec import LZ4, RAW, SAME
from ramster.testing import corpus


def test_owner_to_holder_and_back_is_byte_identical() -> None:
    owner = PagePool(PoolConfig(budget_bytes=16 << 20))
    holder = PagePool(PoolConfig(budget_bytes=16 << 20))
    pages = corpus.pages(500, seed=21)
    owner.put_many(3, list(range(500)), pages, list(range(1000, 1500)))
    cold = owner.coldest(500, include_same_filled=True)
    assert {c.kind for c in cold} == {SAME, LZ4, RAW}
    ok = holder.put_stored_many(
        7,
        [c.offset for c in cold],
        [c.payload for c in cold],
        [c.version for c in cold],
        [c.checksum for c in cold],
    )
    assert all(ok)
    assert holder.statistics().compr_data_size == owner.statistics().compr_data_size
    back = holder.get_stored_many(7, [*range(500), 999])
    assert back[-1] is None
    for offset, item in enumerate(back[:-1]):
        assert item is not None
        version, sum_, payload = item
        assert version == 1000 + offset
        page = expand(payload, 4096)
        assert page == pages[offset]
        assert checksum(page) == sum_
    # The holder can also expand and verify by itself.
    assert holder.get_many(7, list(range(500))) == pages


def test_holder_budget_refuses_and_old_copies_go() -> None:
    holder = PagePool(PoolConfig(budget_bytes=256 << 10))
    blob = os.urandom(4096)
    results = holder.put_stored_many(0, list(range(200)), [blob] * 200, [1] * 200, [5] * 200)
    assert results.count(False) > 0
    assert holder.statistics().pool_total_size <= 256 << 10
    first_refused = results.index(False)
    assert not any(results[first_refused:])


def test_a_corrupt_payload_is_caught_when_expanded() -> None:
    holder = PagePool(PoolConfig(budget_bytes=4 << 20))
    page = next(p for p in corpus.pages(50, seed=2) if p[:8] * 512 != p)
    owner = PagePool(PoolConfig(budget_bytes=4 << 20))
    owner.put_many(0, [0], [page], [1])
    (cold,) = owner.coldest(1)
    bad = bytearray(cold.payload)
    bad[len(bad) // 2] ^= 0x40
    holder.put_stored_many(0, [0], [bytes(bad)], [1], [cold.checksum])
    item = holder.get_stored_many(0, [0])[0]
    assert item is not None
    assert checksum(expand(item[2], 4096)) != item[1]


@pytest.mark.parametrize("threshold", [1.0, 0.0, 1.5])
def test_threshold_must_keep_lz4_shorter_than_a_page(threshold: float) -> None:
    with pytest.raises(ValueError, match="compress_threshold"):
        PoolConfig(compress_threshold=threshold)
