"""The drop queue against the copy it must never take: a drop on its way to a holder while the
same page (same version) is copied there again, across a restart of that holder and a second
delivery round. Seen in CI: a repaired page lost its new copy to an older stray's drop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from ramster.frontswap.remote import SpillConfig
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.holders import Tier
from ramster.pagestore import PagePool, PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders

INC = "00000001-test"


class GatedHolders(InProcessHolders):
    """Drops wait at a gate once they have left the owner."""

    def __init__(self, lents: dict[str, LentPool]) -> None:
        super().__init__("owner", INC, lents)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def drop(
        self, node: str, areas: list[int], offsets: list[int], versions: list[int]
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().drop(node, areas, offsets, versions)


def _setup() -> tuple[DropQueue, GatedHolders, bytes]:
    lents = {"peer1": LentPool(PoolConfig(budget_bytes=1 << 20))}
    holders = GatedHolders(lents)
    pool = PagePool(PoolConfig(budget_bytes=1 << 20))
    tier = Tier(pool, holders, SpillConfig(), random.Random(1))
    return DropQueue(tier), holders, corpus.pages(1, seed=3)[0]


def _put(holders: GatedHolders, page: bytes) -> None:
    ok = holders.lents["peer1"].put(
        "owner", INC, [0], [7], [3], [checksum(page)], [encode(page, PoolConfig())], False
    )
    assert ok == [True]


def _held(holders: GatedHolders) -> bool:
    return holders.lents["peer1"].get("owner", INC, [0], [7]) != [None]


async def _restart(drops: DropQueue) -> None:
    drops.forget_node("peer1")


async def _second_round(drops: DropQueue) -> None:
    await drops.deliver()


@pytest.mark.asyncio
@pytest.mark.parametrize("meanwhile", [_restart, _second_round], ids=["restart", "second-round"])
async def test_a_copy_put_while_its_drop_is_on_the_way_stays(
    meanwhile: Callable[[DropQueue], Awaitable[None]],
) -> None:
    drops, holders, page = _setup()
    _put(holders, page)
    drops.enqueue(["peer1"], 0, [7], [3])  # a stray of version 3
    sending = asyncio.ensure_future(drops.deliver())
    await holders.entered.wait()
    await meanwhile(drops)
    # The same version is about to be copied there again (a repair): wait for the drop.
    waiting = asyncio.ensure_future(drops.before_put(["peer1"], 0, [7], [3]))
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
async def test_a_failed_batch_of_a_restarted_holder_is_not_queued_again() -> None:
    drops, holders, _ = _setup()
    drops.enqueue(["peer1"], 0, [7, 8], [3, 4])
    sending = asyncio.ensure_future(drops.deliver())
    await holders.entered.wait()
    holders.down.add("peer1")  # the call fails once it is on its way
    drops.forget_node("peer1")
    holders.gate.set()
    await sending
    assert drops.pending() == 0


@pytest.mark.asyncio
async def test_a_put_of_an_older_version_leaves_a_newer_versions_drop_queued() -> None:
    # The simulation's seed 12: a repair batch read before key 7 moved on to v56 put v27 on
    # the holder of v56 (refused there: newest wins), and took the queued drop of v56 out of
    # the queue with it: v56 stayed on that holder, referenced by no one.
    drops, _, _ = _setup()
    drops.enqueue(["peer1"], 0, [7], [56])
    await drops.before_put(["peer1"], 0, [7], [27])
    assert drops.pending() == 1
    # A put of that very version takes the drop out (it would remove the new copy).
    await drops.before_put(["peer1"], 0, [7], [56])
    assert drops.pending() == 0
