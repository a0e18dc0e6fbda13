"""The lent pool: pages per (owner, incarnation), reclaimed when the owner restarts."""

from __future__ import annotations

import os

import pytest

from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import StaleIncarnation
from ramster.rpc.pages import PageBatch

OLD = "0000017f-aaaa"
NEW = "00000180-bbbb"


def blobs(n: int) -> list[bytes]:
    return [os.urandom(1000) for _ in range(n)]


def test_put_get_drop_by_owner() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    data = blobs(10)
    areas = [0] * 5 + [1] * 5
    offsets = list(range(10))
    assert all(lent.put("a", OLD, PageBatch(areas, offsets, [3] * 10, list(range(10)), data)))
    assert all(lent.put("b", OLD, PageBatch([0] * 10, offsets, [4] * 10, [0] * 10, data)))
    got = lent.get("a", OLD, areas, offsets)
    assert [g[2] if g else None for g in got] == data
    assert [g[0] if g else None for g in got] == [3] * 10
    assert lent.get("a", OLD, [2], [0]) == [None]
    assert lent.drop("a", OLD, [0, 0], [0, 99]) == [True, False]
    assert lent.drop_area("a", OLD, 1) == 5
    assert lent.statistics().pool.stored_pages == 4 + 10
    assert lent.get("b", OLD, [0], [0])[0] is not None


def test_versioned_drop_keeps_newer_copies() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    lent.put("a", OLD, PageBatch([0], [1], [10], [0], blobs(1)))
    assert lent.drop("a", OLD, [0], [1], versions=[9]) == [False]
    assert lent.drop("a", OLD, [0], [1], versions=[10]) == [True]


def test_a_new_incarnation_reclaims_the_old_ones_pages() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    lent.put("a", OLD, PageBatch([0] * 20, list(range(20)), [1] * 20, [0] * 20, blobs(20)))
    lent.put("b", OLD, PageBatch([0] * 5, list(range(5)), [1] * 5, [0] * 5, blobs(5)))
    assert lent.note_owner("a", NEW) == 20
    assert lent.get("a", NEW, [0], [0]) == [None]  # gone at once, freed by the reclaim loop
    _reclaim_all(lent)
    st = lent.statistics()
    assert st.reclaimed_pages == 20
    assert st.pool.stored_pages == 5
    with pytest.raises(StaleIncarnation):
        lent.put("a", OLD, PageBatch([0], [0], [1], [0], blobs(1)))
    assert lent.statistics().stale_requests == 1


def test_full_lent_pool_refuses_and_reports_no_room() -> None:
    lent = LentPool(PoolConfig(budget_bytes=128 << 10))
    ok = lent.put(
        "a", OLD, PageBatch([0] * 200, list(range(200)), [1] * 200, [0] * 200, blobs(200))
    )
    assert not all(ok)
    assert lent.free_bytes() == 0
    lent.forget("a")
    _reclaim_all(lent)
    assert lent.statistics().pool.stored_pages == 0


def test_silent_owners_are_reclaimed_after_the_grace() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    lent.note_owner("a", OLD, now=100.0)
    lent.note_owner("b", OLD, now=100.0)
    lent.put("a", OLD, PageBatch([0] * 10, list(range(10)), [1] * 10, [0] * 10, blobs(10)))
    lent.put("b", OLD, PageBatch([0] * 10, list(range(10)), [1] * 10, [0] * 10, blobs(10)))
    lent.note_owner("b", OLD, now=150.0)
    assert lent.reclaim_silent(now=170.0, grace=60.0) == {"a": 10}
    _reclaim_all(lent)
    assert lent.statistics().pool.stored_pages == 10
    assert lent.reclaim_silent(now=200.0, grace=60.0) == {}
    assert lent.reclaim_silent(now=211.0, grace=60.0) == {"b": 10}
    _reclaim_all(lent)
    assert lent.statistics().pool.stored_pages == 0


def _reclaim_all(lent: LentPool) -> None:
    """What the node's reclaim loop does, a step per pass."""
    while lent.reclaim_pending():
        lent.reclaim_step()
