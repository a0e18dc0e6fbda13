"""A flipped byte in a stored copy is detected on load, counted, and never returned."""

from __future__ import annotations

import os

import pytest

from ramster.errors import CorruptPage
from ramster.pagestore import PagePool, PoolConfig
from ramster.testing import corpus


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(corpus.pages(40, seed=1)[2], id="lz4"),
        pytest.param(os.urandom(4096), id="raw"),
        pytest.param(b"\xab" * 4096, id="same-filled"),
    ],
)
def test_flipped_byte_is_detected(page: bytes) -> None:
    pool = PagePool(PoolConfig(budget_bytes=8 << 20))
    good = corpus.pages(8, seed=2)
    pool.put_many(0, list(range(8)), good, [1] * 8)
    pool.put_many(0, [100], [page], [5])
    pool.corrupt_for_test(0, 100)
    with pytest.raises(CorruptPage) as info:
        pool.get_many(0, [100])
    assert info.value.offset == 100
    assert isinstance(info.value, CorruptPage)
    assert pool.statistics().checksum_failures == 1
    # An exclusive batch that meets a corrupt page frees nothing.
    with pytest.raises(CorruptPage):
        pool.get_many(0, [0, 1, 100], exclusive=True)
    assert pool.statistics().checksum_failures == 2
    assert pool.get_many(0, list(range(8))) == good
    # The corrupt copy keeps failing rather than turning into "absent".
    with pytest.raises(CorruptPage):
        pool.get_many(0, [100])
    # Overwriting the key heals it.
    pool.put_many(0, [100], [page], [6])
    assert pool.get_many(0, [100]) == [page]
