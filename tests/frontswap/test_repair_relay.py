"""A repair's relay must not undo its own direct copies (found by review of `DropQueue.not_kept`):
a "not kept" answer from a holder that DID keep the same key and version through another call
of the same repair batch.

A repair batch that needs two new holders copies holder to holder first, then relays through the
owner every page that some new holder missed, to *all* new holders again. A new holder that kept
the direct copy and then refuses the relayed duplicate (it started draining in between: a
draining LentPool refuses every put, duplicates included) is "not kept" for the relay, and
`not_kept` queues a drop of that very (key, version) there, because the owner does not record it
there yet. The batch then records the page on that holder (its direct copy counts), and the drop
removes the copy the owner references. Before f4972f4 a False answer queued nothing.
"""

from __future__ import annotations

import random

import pytest

from ramster.errors import PageUnavailable, PeerLost
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import Keys, PageBatch
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders

INC = "00000001-test"
LOCAL = 1 << 20
LENT = 8 << 20


class DrainingMidRepair(InProcessHolders):
    """`x` keeps its direct copy and starts draining right after it; `w` misses everything."""

    def __init__(self, lents: dict[str, LentPool], x: str, w: str, mode: str) -> None:
        super().__init__("owner", INC, lents)
        self.x = x
        self.w = w
        self.mode = mode
        self.armed = False

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        if self.armed and target == self.w:
            raise PeerLost(f"{target}: connection reset")
        result = await super().copy(source, target, keys, versions, checksums)
        if self.armed and target == self.x and self.mode == "draining":
            self.lents[self.x].draining = True  # a drain order arrives meanwhile
        return result

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        if self.armed and node == self.w:
            raise PeerLost(f"{node}: connection reset")
        if self.armed and node == self.x and self.mode == "relay_fails":
            raise PeerLost(f"{node}: connection reset")  # the relayed duplicate fails
        return await super().put(node, batch, ephemeral)


def held_on(holders: InProcessHolders, node: str, offsets: list[int]) -> int:
    got = holders.lents[node].get("owner", INC, [0] * len(offsets), offsets)
    return sum(g is not None for g in got)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "mode",
    [
        "draining",  # new with f4972f4 (not_kept): the baseline passes this one
        "relay_fails",  # in the baseline too (Copier/put_everywhere's RamsterError stray drop)
    ],
)
async def test_a_relay_refused_by_a_holder_that_kept_the_direct_copy_keeps_that_copy(
    mode: str,
) -> None:
    lents = {p: LentPool(PoolConfig(budget_bytes=LENT)) for p in ("A", "B", "X", "W")}
    holders = DrainingMidRepair(lents, x="X", w="W", mode=mode)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL),
        holders,
        SpillConfig(replicas=2, batch_pages=64, repair_batch_pages=1024),
        rng=random.Random(5),
    )
    await fs.frontswap.init(0)
    n = 2 * LOCAL // 4096
    pages = corpus.pages(n, seed=1)
    holders.down |= {"X", "W"}  # spilled pages go to A and B
    for i in range(0, n, 64):
        assert all(await fs.frontswap.store_many(0, list(range(i, i + 64)), pages[i : i + 64]))
        await fs.spill_once()
    remote = [e[0] for e in fs.pool.remote_entries(0, list(range(n)))]
    assert remote
    holders.down -= {"X", "W"}
    # B is lost and A is leaving: each page needs two new holders, X and W.
    holders.down.add("B")
    holders.armed = True
    assert await fs.repair({"B"}, {"A"}) > 0
    holders.armed = False
    # The first batch (one holder set) went to X alone: X kept every direct copy, W none.
    # (Later batches found X draining: nowhere to go, they stay as they were.)
    entries = fs.pool.remote_entries(0, remote)
    remote = [remote[i] for i, _, _, sid in entries if fs.holder_set(sid) == ("X",)]
    assert remote
    assert held_on(holders, "X", remote) == len(remote)
    await fs.settle_drops(2.0)
    # The owner records X as the holder of every page; X must still hold them (A's copies
    # were orphans, dropped: copy before drop).
    held = held_on(holders, "X", remote)
    try:
        got = await fs.frontswap.load_many(0, remote)
    except PageUnavailable as exc:
        pytest.fail(f"acknowledged pages lost ({held} of {len(remote)} still on X): {exc}")
    assert held == len(remote), "a drop took copies the owner references"
    assert got == [pages[i] for i in remote]
