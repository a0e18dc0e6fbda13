"""The drop queue against the copy it must never take: a drop on its way to a holder while the
same page (same version) is copied there again, across a restart of that holder and a second
delivery round. Seen in CI: a repaired page lost its new copy to an older stray's drop."""

from __future__ import annotations

import asyncio
import random

import pytest

from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.holders import Tier
from ramster.pagestore import PagePool, PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import Keys, PageBatch
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders
from ramster.types import Incarnation, NodeId

INC = "00000001-test"
PEER1 = NodeId("peer1")


class GatedHolders(InProcessHolders):
    """Drops wait at a gate once they have left the owner."""

    def __init__(self, lents: dict[str, LentPool]) -> None:
        super().__init__("owner", INC, lents)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().drop(node, keys, versions)


def _setup() -> tuple[DropQueue, GatedHolders, bytes]:
    lents = {"peer1": LentPool(PoolConfig(budget_bytes=1 << 20))}
    holders = GatedHolders(lents)
    pool = PagePool(PoolConfig(budget_bytes=1 << 20))
    tier = Tier(pool, holders, SpillConfig(), random.Random(1))
    return DropQueue(tier), holders, corpus.pages(1, seed=3)[0]


def _put(holders: GatedHolders, page: bytes) -> None:
    ok = holders.lents[PEER1].put(
        "owner",
        INC,
        PageBatch([0], [7], [3], [checksum(page)], [encode(page, PoolConfig())]),
        False,
    )
    assert ok == [True]


def _held(holders: GatedHolders) -> bool:
    return holders.lents[PEER1].get("owner", INC, [0], [7]) != [None]


async def _second_round(drops: DropQueue) -> None:
    await drops.deliver()


@pytest.mark.asyncio
async def test_a_copy_put_while_its_drop_is_on_the_way_stays() -> None:
    drops, holders, page = _setup()
    _put(holders, page)
    drops.enqueue([PEER1], 0, [7], [3])  # a stray of version 3
    sending = asyncio.ensure_future(drops.deliver())
    await holders.entered.wait()
    await _second_round(drops)
    # The same version is about to be copied there again (a repair): wait for the drop.
    waiting = asyncio.ensure_future(drops.before_put([PEER1], 0, [7], [3]))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "before_put did not wait for the drop on its way"
    holders.gate.set()
    await sending
    await waiting
    _put(holders, page)
    await drops.settle(1.0)
    assert _held(holders)
    assert drops.pending() == 0


@pytest.mark.asyncio
async def test_drops_queued_for_a_holder_that_restarted_still_reach_it() -> None:
    """Seen in the simulation (seed 1030, exports): n4 restarted, and its owner heard of it
    only seconds later; meanwhile a repair copied a page onto the new n4 that did not count and
    was queued to be dropped there. Forgetting that queue when the restart was heard left the
    copy on n4 for good. Queued drops are versioned and a later put withdraws its own: they
    stay, and reach the new incarnation."""
    lents = {"n4": LentPool(PoolConfig(budget_bytes=1 << 20))}
    holders = InProcessHolders("owner", INC, lents)
    tier = RemoteTier(PoolConfig(budget_bytes=1 << 20), holders, SpillConfig(replicas=1))
    page = corpus.pages(1, seed=3)[0]
    assert lents["n4"].put(
        "owner", INC, PageBatch([0], [7], [3], [checksum(page)], [encode(page, PoolConfig())])
    ) == [True]
    tier.queue_drops("n4", 0, [7], [3])  # a copy that did not count
    # Heard late: the copy is on the new one.
    tier.holder_restarted(NodeId("n4"), Incarnation("old-incarnation"))
    assert await tier.settle_drops(5.0)
    assert lents["n4"].get("owner", INC, [0], [7]) == [None], "the stray copy stayed on n4"


@pytest.mark.asyncio
async def test_a_put_of_an_older_version_leaves_a_newer_versions_drop_queued() -> None:
    # The simulation's seed 12: a repair batch read before key 7 moved on to v56 put v27 on
    # the holder of v56 (refused there: newest wins), and took the queued drop of v56 out of
    # the queue with it: v56 stayed on that holder, referenced by no one.
    drops, _, _ = _setup()
    drops.enqueue([PEER1], 0, [7], [56])
    await drops.before_put([PEER1], 0, [7], [27])
    assert drops.pending() == 1
    # A put of that very version takes the drop out (it would remove the new copy).
    await drops.before_put([PEER1], 0, [7], [56])
    assert drops.pending() == 0


@pytest.mark.asyncio
async def test_a_withdrawn_drop_comes_back_when_the_copy_is_not_kept() -> None:
    """Seen in the simulation (seed 1030): a put straggled on n0, so its copy there was queued
    to be dropped; a repair then chose n0 for the same page and withdrew that drop before
    copying, but its only source had lost the page, so n0 kept nothing new. The stray copy on
    n0 stayed forever, held for nobody."""
    lents = {n: LentPool(PoolConfig(budget_bytes=1 << 20)) for n in ("n0", "n4")}
    holders = InProcessHolders("owner", INC, lents)
    tier = RemoteTier(
        PoolConfig(budget_bytes=1 << 20), holders, SpillConfig(replicas=2), rng=random.Random(1)
    )
    page = corpus.pages(1, seed=3)[0]
    stored, total = encode(page, PoolConfig()), checksum(page)
    assert lents["n0"].put("owner", INC, PageBatch([0], [7], [3], [total], [stored])) == [True]
    tier.queue_drops("n0", 0, [7], [3])  # the straggler's copy: a stray
    # The owner records the page on n4 alone, which has lost it meanwhile.
    tier.pool.put_remote(0, [7], [3], [total], tier._tier.sets.intern((NodeId("n4"),)))
    assert await tier.repair(set()) == 0  # nowhere to read it from
    assert await tier.settle_drops(5.0)
    assert lents["n0"].get("owner", INC, [0], [7]) == [None], "the stray copy stayed on n0"
