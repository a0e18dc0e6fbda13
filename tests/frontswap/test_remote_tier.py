"""The remote tier over real lent pools in one process (the in-process holder transport)."""

from __future__ import annotations

import random

import pytest

from ramster.errors import PageUnavailable
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders

INC = "00000001-test"
LOCAL = 2 << 20
LENT = 8 << 20


def cluster(
    peers: int = 3, lent: int = LENT, local: int = LOCAL
) -> tuple[RemoteTier, InProcessHolders]:
    lents = {f"peer{i}": LentPool(PoolConfig(budget_bytes=lent)) for i in range(peers)}
    holders = InProcessHolders("owner", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=local),
        holders,
        SpillConfig(replicas=2, batch_pages=64),
        rng=random.Random(5),
    )
    return fs, holders


async def store_corpus(fs: RemoteTier, n: int, seed: int = 1) -> list[bytes]:
    await fs.frontswap.init(0)
    pages = corpus.pages(n, seed=seed)
    for i in range(0, n, 128):
        ok = await fs.frontswap.store_many(0, list(range(i, min(n, i + 128))), pages[i : i + 128])
        assert all(ok)
        await fs.spill_once()
    return pages


def lent_pages(holders: InProcessHolders) -> int:
    return sum(lent.statistics().pool.stored_pages for lent in holders.lents.values())


@pytest.mark.asyncio
async def test_four_times_the_local_budget_round_trips() -> None:
    fs, holders = cluster()
    n = 4 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    st = fs.frontswap.statistics().pool
    assert st.remote_pages > 0
    assert st.pool_total_size <= LOCAL
    for lent in holders.lents.values():
        assert lent.statistics().pool.pool_total_size <= LENT
    # Every spilled page has two copies on two different holders.
    assert lent_pages(holders) == 2 * st.remote_pages
    got = []
    for i in range(0, n, 256):
        got += await fs.frontswap.load_many(0, list(range(i, min(n, i + 256))))
    assert got == pages
    assert fs.remote_statistics()["remote_loads"] == st.remote_pages


@pytest.mark.asyncio
async def test_one_holder_down_loses_nothing() -> None:
    fs, holders = cluster()
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    holders.down.add("peer1")
    got = await fs.frontswap.load_many(0, list(range(n)))
    assert got == pages
    # Live holders are asked first: the one known to be down is never waited for.
    assert fs.remote_statistics()["remote_unreachable"] == 0


@pytest.mark.asyncio
async def test_a_corrupt_or_stale_copy_is_skipped_and_counted() -> None:
    fs, holders = cluster(peers=2)
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    entries = fs.pool.remote_entries(0, list(range(n)))
    index, _, _, set_id = entries[0]
    first = fs.holder_set(set_id)[0]
    lent = holders.lents[first]
    area_id = lent._ids[("owner", INC, 0)]
    lent.pool.corrupt_for_test(area_id, index)
    assert await fs.frontswap.load(0, index) == pages[index]
    assert fs.remote_statistics()["remote_bad_copies"] == 1
    # Both copies bad: a clear error, never the bad bytes.
    second = holders.lents[fs.holder_set(set_id)[1]]
    second.pool.corrupt_for_test(second._ids[("owner", INC, 0)], index)
    with pytest.raises(PageUnavailable) as raised:
        await fs.frontswap.load(0, index)
    # The error says what each holder gave: a stale copy, nothing, or no answer.
    for node in fs.holder_set(set_id):
        assert f"{node} (0 not held, 1 stale or corrupt)" in str(raised.value)
    holders.down.add(fs.holder_set(set_id)[0])
    with pytest.raises(PageUnavailable, match=r"\(unreachable: "):
        await fs.frontswap.load(0, index)


@pytest.mark.asyncio
async def test_invalidations_reach_the_holders() -> None:
    fs, holders = cluster()
    n = 3 * LOCAL // 4096
    await store_corpus(fs, n)
    remote = [e[0] for e in fs.pool.remote_entries(0, list(range(n)))]
    before = lent_pages(holders)
    await fs.frontswap.invalidate_many(0, remote[:10])
    assert fs.orphans_pending() == 20  # queued: the invalidation waited for no holder
    assert lent_pages(holders) == before
    assert await fs.settle_drops()
    assert lent_pages(holders) == before - 20
    await fs.frontswap.load_many(0, remote[10:20], exclusive=True)
    assert await fs.settle_drops()
    assert lent_pages(holders) == before - 40
    await fs.frontswap.store_many(
        0, remote[20:30], [bytes(4096)] * 10
    )  # overwrite: old copies go too
    assert await fs.settle_drops()
    assert lent_pages(holders) == before - 60
    await fs.frontswap.invalidate_area(0)
    assert await fs.settle_drops()
    assert lent_pages(holders) == 0
    for lent in holders.lents.values():
        assert lent.statistics().pool.compr_data_size == 0


@pytest.mark.asyncio
async def test_everything_full_refuses_cleanly_and_keeps_serving() -> None:
    fs, _ = cluster(peers=2, lent=512 << 10)
    await fs.frontswap.init(0)
    pages = corpus.pages(4000, seed=9)
    results: list[bool] = []
    for i in range(0, 4000, 100):
        results += await fs.frontswap.store_many(0, list(range(i, i + 100)), pages[i : i + 100])
        await fs.spill_once()
    assert False in results
    assert True in results
    got = await fs.frontswap.load_many(0, list(range(4000)))
    for ok, page, original in zip(results, got, pages, strict=True):
        assert page == (original if ok else None)


@pytest.mark.asyncio
async def test_repair_restores_r_copies_and_survives_a_second_loss() -> None:
    fs, holders = cluster(peers=4)
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    remote = fs.frontswap.statistics().pool.remote_pages
    assert remote > 0
    holders.down.add("peer1")
    assert fs.under_replicated({"peer1"}) > 0
    repaired = await fs.repair({"peer1"})
    assert repaired == fs.remote_statistics()["repaired_pages"] > 0
    assert fs.under_replicated({"peer1"}) == 0
    # Every remote page again has two live holders, and each of them really holds it.
    entries = fs.pool.remote_entries(0, list(range(n)))
    assert len(entries) == remote
    for _, _, _, set_id in entries:
        nodes = fs.holder_set(set_id)
        assert len(set(nodes)) == 2
        assert "peer1" not in nodes
    # Lose a second holder: with R=2 restored, nothing is lost.
    holders.down.add("peer2")
    assert await fs.frontswap.load_many(0, list(range(n))) == pages


@pytest.mark.asyncio
async def test_repair_without_room_waits_and_loses_nothing() -> None:
    fs, holders = cluster(peers=2)
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    holders.down.add("peer0")
    assert await fs.repair({"peer0"}) == 0  # no third holder to copy to
    assert fs.under_replicated({"peer0"}) > 0
    assert await fs.frontswap.load_many(0, list(range(n))) == pages


@pytest.mark.asyncio
async def test_copies_orphaned_by_repair_are_dropped_when_the_holder_returns() -> None:
    fs, holders = cluster(peers=4)
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    holders.down.add("peer1")  # a partition: peer1 keeps its copies
    await fs.repair({"peer1"})
    assert fs.orphans_pending() > 0
    holders.down.discard("peer1")
    assert await fs.drop_orphans({"peer0", "peer1", "peer2", "peer3"}) > 0
    assert fs.orphans_pending() == 0
    # Nothing leaked: every held copy is one the owner references.
    assert lent_pages(holders) == 2 * fs.frontswap.statistics().pool.remote_pages
    assert await fs.frontswap.load_many(0, list(range(n))) == pages


@pytest.mark.asyncio
@pytest.mark.parametrize("direct", [True, False])
async def test_repair_copies_holder_to_holder_and_never_spreads_a_bad_copy(direct: bool) -> None:
    lents = {f"peer{i}": LentPool(PoolConfig(budget_bytes=LENT)) for i in range(4)}
    holders = InProcessHolders("owner", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL),
        holders,
        SpillConfig(replicas=2, batch_pages=64, direct_copy=direct),
        rng=random.Random(5),
    )
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    entries = fs.pool.remote_entries(0, list(range(n)))
    # A page whose surviving copy is corrupt: it must not be re-replicated as it is.
    index, _, _, set_id = next(e for e in entries if "peer1" in fs.holder_set(e[3]))
    survivor = next(h for h in fs.holder_set(set_id) if h != "peer1")
    lent = holders.lents[survivor]
    lent.pool.corrupt_for_test(lent._ids[("owner", INC, 0)], index)
    holders.down.add("peer1")
    repaired = await fs.repair({"peer1"})
    stats = fs.remote_statistics()
    assert repaired > 0
    assert (stats["direct_copies"] > 0) is direct
    assert stats["direct_copies"] <= repaired
    # Only the corrupt page is left under-replicated, and no holder got its bad bytes.
    assert fs.under_replicated({"peer1"}) == 1
    assert stats["pages_unreadable"] == 1
    (entry,) = fs.pool.remote_entries(0, [index])
    assert entry[3] == set_id
    for name, other in holders.lents.items():
        if name not in (survivor, "peer1"):
            assert other.get("owner", INC, [0], [index]) == [None]
    for i, page in enumerate(
        await fs.frontswap.load_many(0, [e[0] for e in entries if e[0] != index])
    ):
        assert page == pages[[e[0] for e in entries if e[0] != index][i]]


@pytest.mark.asyncio
async def test_a_page_moved_back_onto_a_holder_keeps_its_copy_there() -> None:
    # Seen in containers: a holder with a pending orphan of a page gets the same page (same
    # version) again from a later move; the orphan drop must not delete the new copy.
    fs, holders = cluster(peers=3)
    n = 3 * LOCAL // 4096
    pages = await store_corpus(fs, n)
    holders.down.add("peer0")  # a partition: peer0 keeps its copies, they become orphans
    await fs.repair({"peer0"})
    assert fs.orphans_pending() > 0
    holders.down.discard("peer0")
    moved = await fs.move("peer2", "peer0", max_pages=n)
    assert moved > 0
    await fs.drop_orphans({"peer0", "peer1", "peer2"})
    assert fs.orphans_pending() == 0
    # Every holder named for a page really holds it, and nothing else is left behind.
    entries = fs.pool.remote_entries(0, list(range(n)))
    for offset, version, _, set_id in entries:
        for node in fs.holder_set(set_id):
            (held,) = holders.lents[node].get("owner", INC, [0], [offset])
            assert held is not None and held[0] == version, (node, offset)
    assert lent_pages(holders) == 2 * len(entries)
    holders.down.add("peer1")
    assert await fs.frontswap.load_many(0, list(range(n))) == pages  # one copy each is enough


@pytest.mark.asyncio
async def test_a_batch_without_room_does_not_hold_up_repair_of_a_smaller_one() -> None:
    # The simulation's seed 15: the first batch (a big set) had no holder with room for it, and
    # repair stopped there; a two-page set the third holder had room for stayed short for good.
    lents = {
        "peer0": LentPool(PoolConfig(budget_bytes=LENT)),
        "peer1": LentPool(PoolConfig(budget_bytes=LENT)),
        "peer2": LentPool(PoolConfig(budget_bytes=64 << 10)),
    }
    holders = InProcessHolders("owner", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL),
        holders,
        SpillConfig(replicas=2, batch_pages=64),
        rng=random.Random(5),
        replicated=True,  # every store goes to its holders at once
    )
    await fs.frontswap.init(0)
    big = 200
    pages = corpus.pages(big + 2, seed=3)
    holders.down.add("peer2")
    # The big set first (on peer0 and peer1), then a short one on peer0 alone.
    assert all(await fs.frontswap.store_many(0, list(range(big)), pages[:big]))
    holders.down.add("peer1")
    assert all(await fs.frontswap.store_many(0, [big, big + 1], pages[big:]))
    holders.down.discard("peer2")
    sets = {
        tuple(sorted(fs.holder_set(e[3]))) for e in fs.pool.remote_entries(0, list(range(big + 2)))
    }
    assert sets == {("peer0", "peer1"), ("peer0",)}
    # peer2 has room for the short set's two pages, not for the big set's 200.
    assert await fs.repair({"peer1"}) == 2
    (a, b) = fs.pool.remote_entries(0, [big, big + 1])
    assert fs.holder_set(a[3]) == fs.holder_set(b[3]) == ("peer0", "peer2")
    holders.down.add("peer0")
    assert await fs.frontswap.load_many(0, [big, big + 1]) == pages[big:]
