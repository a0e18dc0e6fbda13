"""The owner's record of spilled pages: where they went, at which version, and what to drop."""

from __future__ import annotations

from ramster.pagestore import PagePool, PoolConfig
from ramster.testing import corpus


def spilled_pool() -> tuple[PagePool, list[bytes]]:
    pool = PagePool(PoolConfig(budget_bytes=16 << 20))
    pages = [p for p in corpus.pages(400, seed=31) if p[:8] * 512 != p][:100]
    pool.put_many(0, list(range(100)), pages, list(range(1, 101)))
    return pool, pages


def test_mark_remote_frees_local_copies_and_keeps_metadata() -> None:
    pool, _ = spilled_pool()
    before = pool.statistics()
    cold = pool.coldest(40)
    ok = pool.mark_remote(0, [c.offset for c in cold], [c.version for c in cold], holder_set=7)
    assert all(ok)
    st = pool.statistics()
    assert st.stored_pages == 60
    assert st.remote_pages == 40
    assert st.compr_data_size < before.compr_data_size
    assert st.pool_total_size < before.pool_total_size
    offsets = [c.offset for c in cold]
    assert pool.get_many(0, offsets) == [None] * 40  # not here: the caller asks the holders
    entries = pool.remote_entries(0, offsets)
    assert pool.area_counts() == {0: (60, 40)}
    assert [e[0] for e in entries] == list(range(40))
    assert all(e[3] == 7 for e in entries)
    assert [e[1] for e in entries] == [c.version for c in cold]
    assert [e[2] for e in entries] == [c.checksum for c in cold]
    # Remote entries are never handed out as cold pages again.
    assert not {c.offset for c in pool.coldest(100)} & set(offsets)


def test_a_key_stored_again_during_the_spill_keeps_its_new_copy() -> None:
    pool, pages = spilled_pool()
    (cold,) = pool.coldest(1)
    pool.put_many(0, [cold.offset], [pages[0]], [999])
    assert pool.mark_remote(0, [cold.offset], [cold.version], holder_set=1) == [False]
    assert pool.get_many(0, [cold.offset]) == [pages[0]]


def test_forgetting_remote_pages_queues_drops_for_their_holders() -> None:
    pool, pages = spilled_pool()
    cold = pool.coldest(10)
    pool.mark_remote(0, [c.offset for c in cold], [c.version for c in cold], holder_set=3)
    pool.drop_many(0, [cold[0].offset, cold[1].offset])  # invalidate
    pool.put_many(0, [cold[2].offset], [pages[5]], [500])  # overwrite
    pool.get_many(0, [cold[3].offset], exclusive=True)  # exclusive load of a remote page: None here
    drops = pool.drain_remote_drops()
    assert sorted(d[2] for d in drops) == sorted(c.offset for c in cold[:3])
    assert all(d[0] == 3 and d[1] == 0 for d in drops)
    assert pool.drain_remote_drops() == []
    assert pool.statistics().remote_pages == 7
    # Dropping a whole area can skip the per-page drops (the caller drops the area remotely).
    pool.drop_area(0, record_remote=False)
    assert pool.drain_remote_drops() == []
    assert pool.statistics().remote_pages == 0
    assert pool.statistics().stored_pages == 0


def test_put_remote_records_pages_stored_straight_on_holders() -> None:
    pool = PagePool(PoolConfig(budget_bytes=1 << 20))
    ok = pool.put_remote(2, [10, 11, 12], [5, 6, 7], [111, 222, 333], holder_set=9)
    assert ok == [True, True, True]
    assert pool.versions(2, [10, 11, 12, 13]) == [5, 6, 7, None]
    assert [e[3] for e in pool.remote_entries(2, [10, 11, 12])] == [9, 9, 9]
    assert pool.statistics().remote_pages == 3
    pool.put_remote(2, [20, 21], [1, 1], [1, 1], holder_set=4)
    assert pool.remote_count_in_sets([9]) == len(pool.remote_in_sets([9])) == 3
    assert pool.remote_count_in_sets([4, 9, 77]) == len(pool.remote_in_sets([4, 9, 77])) == 5
    assert pool.remote_count_in_sets([]) == 0
    assert pool.area_counts() == {2: (0, 5)}
    # A full budget refuses even metadata.
    tiny = PagePool(PoolConfig(budget_bytes=0))
    assert tiny.put_remote(0, [1], [1], [1], holder_set=0) == [False]


def test_empty_batches_change_nothing() -> None:
    pool, _ = spilled_pool()
    before = pool.statistics()
    assert pool.put_remote(0, [], [], [], holder_set=1) == []
    assert pool.put_many(0, [], [], []) == []
    assert pool.put_stored_many(0, [], [], [], []) == []
    assert pool.statistics() == before


def test_stored_form_reads_skip_remote_entries() -> None:
    pool, _ = spilled_pool()
    cold = pool.coldest(5)
    pool.mark_remote(0, [c.offset for c in cold], [c.version for c in cold], holder_set=2)
    got = pool.get_stored_many(0, [*(c.offset for c in cold), 99])
    assert got[:5] == [None] * 5
    assert got[5] is not None
