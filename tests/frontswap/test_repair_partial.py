"""A repair places as many new copies as there is room for (simulation seed 102): a page whose
two holders both leave, with one other live holder, got no new copy at all, because placement
was asked for two or none; the page stayed on the leaving holders only."""

from __future__ import annotations

import random

import pytest

from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders

pytestmark = pytest.mark.asyncio
LOCAL, LENT = 1 << 20, 16 << 20


async def test_one_new_copy_when_only_one_holder_has_room() -> None:
    lents = {n: LentPool(PoolConfig(budget_bytes=LENT)) for n in ("A", "B", "C", "D")}
    holders = InProcessHolders("owner", "00000001-owner", lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL),
        holders,
        SpillConfig(replicas=2, batch_pages=64),
        rng=random.Random(2),
    )
    await fs.frontswap.init(0)
    holders.down |= {"C", "D"}  # spilled pages go to A and B
    n = 2 * LOCAL // 4096
    pages = corpus.pages(n, seed=4)
    for i in range(0, n, 64):
        assert all(await fs.frontswap.store_many(0, list(range(i, i + 64)), pages[i : i + 64]))
        await fs.spill_once()
    assert fs.under_replicated(set()) == 0
    holders.down.discard("C")  # D stays down: C is the only place for new copies
    assert await fs.repair(set(), {"A", "B"}) > 0
    entries = fs.pool.remote_entries(0, list(range(n)))
    sets = {fs.holder_set(int(e[3])) for e in entries}
    assert sets == {("C",)}, sets
    await fs.settle_drops(2.0)
    holders.down |= {"A", "B"}
    assert await fs.frontswap.load_many(0, list(range(n))) == pages
