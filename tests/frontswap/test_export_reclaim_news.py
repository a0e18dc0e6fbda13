"""An export holder that reclaimed the export's pages tells its server on the next put, get or
drop, and each of those paths makes the server repair around it (fourth review, finding 3: the
drop queue took the news for an ordinary failure, and a keepalive claim swallowed it)."""

from __future__ import annotations

import random

import pytest

from ramster.errors import ExportFenced, PagesReclaimed
from ramster.frontswap.remote import SpillConfig
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.holders import Tier
from ramster.pagestore import PagePool, PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import Fenced, Reclaimed, export_incarnation
from ramster.rpc.pages import Keys, PageBatch
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders
from ramster.types import NodeId

OWNER = "export:disk"
INC = export_incarnation(1, "srv")


class WireHolders(InProcessHolders):
    """In-process holders that answer as the RPC handler does (`handlers.holder._refusals`)."""

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        try:
            return await super().put(node, batch, ephemeral)
        except Reclaimed as exc:
            raise PagesReclaimed(str(exc)) from None
        except Fenced as exc:
            raise ExportFenced(str(exc)) from None

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
        try:
            await super().drop(node, keys, versions)
        except Reclaimed as exc:
            raise PagesReclaimed(str(exc)) from None


@pytest.mark.asyncio
async def test_a_reclaim_told_to_a_drop_reaches_the_server() -> None:
    """Finding 3. Export server srv (term 1) has copies of blocks 1..3 on peer1 (and peer2).
    peer1 does not hear from it for export_grace (a pause, a partition) and reclaims them,
    marking the export to be told once. The server's next call to peer1 is a queued drop (of a
    stray, an older version, a trim): peer1 answers PagesReclaimed and pops its mark; the drop
    queue logs "drops failed, will retry" and never calls `tier.reclaimed`. The next put is
    taken without a word: the server keeps counting peer1 as a replica of blocks 1..3 that it
    no longer holds, and never repairs them. Losing peer2 then loses acknowledged blocks
    (invariants 1 and 8)."""
    now = [0.0]
    lents = {"peer1": LentPool(PoolConfig(budget_bytes=1 << 20))}
    lents["peer1"].clock = lambda: now[0]
    holders = WireHolders(OWNER, INC, lents)
    assert lents["peer1"].claim(OWNER, 1, "srv", 1 << 20)[0]
    pages = corpus.pages(4, seed=5)
    cfg = PoolConfig()
    ok = await holders.put(
        "peer1",
        PageBatch(
            [0, 0, 0],
            [1, 2, 3],
            [1, 1, 1],
            [checksum(p) for p in pages[:3]],
            [encode(p, cfg) for p in pages[:3]],
        ),
    )
    assert ok == [True, True, True]
    now[0] = 1000.0
    assert lents["peer1"].reclaim_exports(60) == {OWNER: 3}

    tier = Tier(
        PagePool(PoolConfig(budget_bytes=1 << 20)), holders, SpillConfig(), random.Random(1)
    )
    drops = DropQueue(tier)
    drops.enqueue([NodeId("peer1")], 0, [9], [1])  # any queued drop: a stray's, an older version's
    await drops.deliver()
    # The holder has now spent its news: the next put is taken silently.
    p = pages[3]
    assert await holders.put(
        "peer1", PageBatch([0], [4], [1], [checksum(p)], [encode(p, cfg)])
    ) == [True]
    assert tier.counters["holders_reclaimed"] == 1, (
        "peer1 reclaimed the export's pages and told it once, to a drop; the drop queue took it "
        "for a failure, so the server never learned that its copies on peer1 are gone"
    )
