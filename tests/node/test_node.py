"""Real node processes on loopback: spilling, replication, holder loss, corruption, reclaim."""

from __future__ import annotations

import asyncio
import random
import signal
from typing import Any

import pytest

from ramster.errors import RemoteError
from ramster.protocol import DEBUG_DAMAGE
from ramster.testing import corpus
from ramster.testing.wait import wait_until
from tests.conftest import ClusterFactory

MiB = 1 << 20


async def store_all(client, pages: list[bytes], area: int = 0, batch: int = 128) -> list[bool]:  # type: ignore[no-untyped-def]
    await client.init(area)
    ok: list[bool] = []
    for i in range(0, len(pages), batch):
        ok += await client.store_many(
            area, list(range(i, min(len(pages), i + batch))), pages[i : i + batch]
        )
    return ok


async def load_all(client, n: int, area: int = 0, batch: int = 128) -> list[bytes | None]:  # type: ignore[no-untyped-def]
    out: list[bytes | None] = []
    for i in range(0, n, batch):
        out += await client.load_many(area, list(range(i, min(n, i + batch))))
    return out


async def emptied(c: Any, holders: list[int]) -> list[dict[str, Any]]:
    """The holders' lent pools, once none of them keeps a page (else an empty list)."""
    lent = [(await c.stats(i))["lent"] for i in holders]
    return lent if all(x["stored_pages"] == 0 for x in lent) else []


@pytest.mark.asyncio
async def test_four_times_the_local_budget_spills_and_comes_back(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="4MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(16 * MiB // 4096, seed=3)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        assert await load_all(client, len(pages)) == pages
    owner = await c.stats(0)
    assert owner["pool"]["remote_pages"] > 0
    assert owner["pool"]["pool_total_size"] <= 4 * MiB
    held = 0
    for i in (1, 2):
        st = await c.stats(i)
        assert st["lent"]["pool_total_size"] <= 32 * MiB
        held += st["lent"]["stored_pages"]
    assert held == 2 * owner["pool"]["remote_pages"]  # R = 2 copies of every spilled page


@pytest.mark.asyncio
async def test_kill_9_of_a_holder_during_a_workload_loses_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    rng = random.Random(7)
    pages = corpus.pages(2048, seed=5)
    acked: dict[int, bytes] = {}
    async with c.client(0) as client:
        await client.init(0)

        async def workload(rounds: int) -> None:
            for _ in range(rounds):
                offs = rng.sample(range(3000), 64)
                batch = [pages[rng.randrange(len(pages))] for _ in offs]
                for off, page, ok in zip(
                    offs, batch, await client.store_many(0, offs, batch), strict=True
                ):
                    if ok:
                        acked[off] = page
                    else:
                        acked.pop(off, None)
                probe = rng.sample(sorted(acked), min(32, len(acked)))
                got = await client.load_many(0, probe)
                assert got == [acked[o] for o in probe]

        await workload(60)
        assert (await c.stats(0))["pool"]["remote_pages"] > 0
        c.kill(2)
        await workload(60)
        keys = sorted(acked)
        got = await load_all_keys(client, keys)
        assert got == [acked[k] for k in keys]


async def load_all_keys(client, keys: list[int]) -> list[bytes | None]:  # type: ignore[no-untyped-def]
    out: list[bytes | None] = []
    for i in range(0, len(keys), 128):
        out += await client.load_many(0, keys[i : i + 128])
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("stale", [False, True], ids=["corrupt", "stale"])
async def test_a_bad_copy_on_a_holder_is_never_returned(
    cluster_factory: ClusterFactory, stale: bool
) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = [p for p in corpus.pages(3000, seed=8) if p[:8] * 512 != p][:1500]
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        await c.wait_stats(0, lambda st: st["pool"]["remote_pages"] > 0)
        got = await load_all(client, len(pages))  # all good before any damage
        assert got == pages
        # Damage the coldest page (offset 0 was spilled first) on both holders in turn.
        for i in (1, 2):
            async with c.client(i) as holder:
                await holder._rpc.call(DEBUG_DAMAGE, ["n0", 0, 0, stale])
            if i == 1:
                assert await client.load(0, 0) == pages[0]
        with pytest.raises(RemoteError, match="PageUnavailable"):
            await client.load(0, 0)
        assert await client.load(0, 1) == pages[1]
    remote = (await c.stats(0))["remote"]
    assert remote["remote_bad_copies"] >= 2


@pytest.mark.asyncio
async def test_invalidate_area_empties_the_holders(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(2048, seed=9)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        assert sum([(await c.stats(i))["lent"]["stored_pages"] for i in (1, 2)]) > 0
        await client.invalidate_area(0)
        assert await client.load(0, 5) is None  # at once, on the owner
        # The holders forget in the background (drops are never waited for): soon, and all.
        lent = await wait_until(lambda: emptied(c, [1, 2]), 10, "the holders emptied")
        assert all(x["compr_data_size"] == 0 for x in lent)


@pytest.mark.asyncio
async def test_an_owner_restart_reclaims_its_old_pages_everywhere(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    async with c.client(0) as client:
        assert all(await store_all(client, corpus.pages(2048, seed=10)))
    assert sum([(await c.stats(i))["lent"]["stored_pages"] for i in (1, 2)]) > 0
    c.kill(0)
    c.start(0)
    await c.wait_ready()
    lent = await wait_until(lambda: emptied(c, [1, 2]), 5, "holders reclaimed the old pages")
    assert all(x["reclaimed_pages"] > 0 for x in lent)


@pytest.mark.asyncio
async def test_all_budgets_full_refuses_cleanly_and_keeps_serving(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="1MiB", lent_budget="1MiB")
    await c.start_all()
    pages = corpus.pages(4096, seed=11)
    async with c.client(0) as client:
        ok = await store_all(client, pages)
        assert True in ok
        assert False in ok
        got = await load_all(client, len(pages))
        for flag, page, original in zip(ok, got, pages, strict=True):
            if flag:
                assert page == original
        for i in range(3):
            st = await c.stats(i)
            assert st["pool"]["pool_total_size"] <= 1 * MiB
            assert st["lent"]["pool_total_size"] <= 1 * MiB


@pytest.mark.asyncio
async def test_redundancy_is_restored_after_a_holder_dies(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(3000, seed=12)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        assert (await c.stats(0))["pool"]["remote_pages"] > 0
        c.kill(1)
        st = await c.wait_stats(
            0, lambda st: st["gone_peers"] == ["n1"] and st["under_replicated_pages"] == 0
        )
        assert st["gone_peers"] == ["n1"]
        assert st["under_replicated_pages"] == 0
        assert st["remote"]["repaired_pages"] > 0
        # A second holder loss after repair: still nothing lost.
        c.kill(2)
        assert await load_all(client, len(pages)) == pages


@pytest.mark.asyncio
async def test_a_dead_owners_pages_are_reclaimed_after_the_grace(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB", extra=["--owner-grace=2"])
    await c.start_all()
    async with c.client(0) as client:
        assert all(await store_all(client, corpus.pages(2048, seed=13)))
    assert sum([(await c.stats(i))["lent"]["stored_pages"] for i in (1, 2)]) > 0
    c.kill(0)
    await asyncio.sleep(1.0)
    assert sum([(await c.stats(i))["lent"]["stored_pages"] for i in (1, 2)]) > 0  # within grace
    lent = await wait_until(lambda: emptied(c, [1, 2]), 6, "holders reclaimed the pages")
    assert all(x["reclaimed_pages"] > 0 for x in lent)


@pytest.mark.asyncio
async def test_a_holder_restarted_quickly_counts_as_lost_and_is_repaired(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(3000, seed=14)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        c.kill(1)
        c.start(1)  # back before anyone could call it dead: its lent pool is empty now
        await c.wait_ready([1])
        new = (await c.stats(1))["incarnation"]

        def heard(st: dict[str, Any]) -> bool:
            return any(p["node"] == "n1" and p["incarnation"] == new for p in st["peers"])

        # The owner must have heard of the restart before the counters mean anything: on a busy
        # machine a straggler's repair can make them hold while n1 is still starting, and then
        # killing n2 loses two holders of some pages at once (beyond R=2's promise).
        assert heard(await c.wait_stats(0, heard))
        st = await c.wait_stats(
            0, lambda st: st["remote"]["repaired_pages"] > 0 and st["under_replicated_pages"] == 0
        )
        assert st["remote"]["repaired_pages"] > 0
        assert st["under_replicated_pages"] == 0
        c.kill(2)
        assert await load_all(client, len(pages)) == pages


@pytest.mark.asyncio
async def test_a_paused_holder_is_repaired_around_and_its_orphans_reclaimed(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(3000, seed=16)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        proc = c.nodes[1].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            st = await c.wait_stats(
                0,
                lambda st: (
                    st["gone_peers"] == ["n1"]
                    and st["under_replicated_pages"] == 0
                    and st["orphans_pending"] > 0
                ),
            )
            assert st["gone_peers"] == ["n1"]
            assert st["under_replicated_pages"] == 0
        finally:
            proc.send_signal(signal.SIGCONT)
        st = await c.wait_stats(0, lambda st: st["orphans_pending"] == 0)
        assert st["orphans_pending"] == 0
        held, remote = await c.settle_copies(0, [1, 2, 3])
        assert held == 2 * remote  # nothing leaked
        assert await load_all(client, len(pages)) == pages


@pytest.mark.asyncio
async def test_the_coordinator_is_replaced_within_seconds_with_a_higher_term(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    async with c.client(3) as client:
        assert all(await store_all(client, corpus.pages(1500, seed=18)))

    async def views(nodes: list[int]) -> set[tuple[str, int]]:
        return {((st := await c.stats(i))["coordinator"], st["term"]) for i in nodes}

    async def agreed(nodes: list[int]) -> set[tuple[str, int]]:
        seen = await views(nodes)
        return seen if len(seen) == 1 else set()

    ((coordinator, term),) = await wait_until(lambda: agreed([0, 1, 2, 3]), 5, "one view")
    assert coordinator == "n0"
    # The owner's pages per holder, as its heartbeats report them.
    await c.wait_stats(0, lambda st: bool(st["aggregates"]["pages"].get("n3")), within=5)
    assert (await c.stats(1))["aggregates"] is None
    c.kill(0)
    started = asyncio.get_running_loop().time()

    async def n1_elected() -> set[tuple[str, int]]:
        seen = await agreed([1, 2, 3])
        return seen if seen and next(iter(seen))[0] == "n1" else set()

    ((new, new_term),) = await wait_until(n1_elected, 10, "n1 elected by the survivors")
    failover = asyncio.get_running_loop().time() - started
    assert new == "n1"
    assert new_term > term
    assert failover < 5


@pytest.mark.asyncio
async def test_a_joining_node_receives_its_share(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(4, local_budget="2MiB", lent_budget="16MiB")
    for i in range(3):
        c.start(i)
    await c.wait_ready([0, 1, 2])
    pages = corpus.pages(4000, seed=19)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        c.start(3)  # joins: copies move to it from the fullest holders
        await c.wait_ready()

        def settled(st: dict[str, Any]) -> bool:
            return bool(st["remote"]["rebalanced_pages"] > 0 and st["orphans_pending"] == 0)

        st = await c.wait_stats(0, settled, within=20)
        assert settled(st), st["remote"]
        # Moves go on in batches until the holders are even: then nothing is left over.
        held, remote = await c.settle_copies(0, [1, 2, 3])
        assert held == 2 * remote  # nothing lost, nothing leaked
        assert (await c.stats(3))["lent"]["stored_pages"] > 0
        assert await load_all(client, len(pages)) == pages
