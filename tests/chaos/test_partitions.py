"""Partitions that fault owners and the coordinator, with several writers at once: network
namespaces, mDNS only, iptables inside each namespace splitting the cluster in two.

Each writer keeps a model of what it was told is stored (a store that returned True, the
newest value of its key; a refused one removes the key). During a partition loads may fail
(a page's holders are on the other side); after healing every acknowledged page must load
back identical, the cluster must agree on one coordinator at a higher term, redundancy must be
whole again and the holders must keep exactly the copies the owners reference.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ramster.errors import RamsterError
from ramster.testing import corpus
from ramster.testing.cluster import Cluster, make_cluster
from ramster.testing.netns import NetnsLab, available
from ramster.testing.wait import wait_until
from tests.conftest import REQUIRE_ALL

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GRACE = 5.0
"""The holders' owner grace, shortened so that a partition can outlast it."""
VALUES = corpus.pages(256, seed=61)
KEYS = 1500


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    reason = available()
    if reason is not None:
        if REQUIRE_ALL:
            pytest.fail(f"RAMSTER_REQUIRE_ALL=1 and {reason}")
        pytest.skip(reason)
    with NetnsLab(5, net=9) as built:
        yield built


@pytest.fixture
def cluster(lab: NetnsLab, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(
        tmp_path,
        5,
        local_budget="2MiB",
        lent_budget="48MiB",
        static_peers=False,
        lab=lab,
        extra=[f"--owner-grace={GRACE}"],
    )
    yield c
    c.stop_all()


@dataclass
class Writer:
    """One owner's workload and its model."""

    cluster: Cluster
    node: int
    rng: random.Random
    acked: dict[int, bytes] = field(default_factory=dict)
    uncertain: set[int] = field(default_factory=set)
    """Keys whose last store failed in transit: either outcome is right."""
    refused: int = 0
    stored: int = 0

    async def write(self, batches: int) -> None:
        async with self.cluster.client(self.node) as client:
            await client.init(0)
            for _ in range(batches):
                keys = self.rng.sample(range(KEYS), 64)
                pages = [self.rng.choice(VALUES) for _ in keys]
                try:
                    ok = await client.store_many(0, keys, pages)
                except RamsterError:
                    for k in keys:
                        self.acked.pop(k, None)
                        self.uncertain.add(k)
                    continue
                for k, page, flag in zip(keys, pages, ok, strict=True):
                    self.uncertain.discard(k)
                    if flag:
                        self.acked[k] = page
                        self.stored += 1
                    else:
                        self.acked.pop(k, None)
                        self.refused += 1

    async def write_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await self.write(4)
            await asyncio.sleep(0.05)

    async def verify(self) -> None:
        async with self.cluster.client(self.node) as client:
            keys = sorted(self.acked)
            for i in range(0, len(keys), 256):
                chunk = keys[i : i + 256]
                got = await client.load_many(0, chunk)
                wrong = [k for k, page in zip(chunk, got, strict=True) if page != self.acked[k]]
                assert not wrong, f"n{self.node}: {len(wrong)} acknowledged pages wrong or lost"


async def views(c: Cluster, nodes: list[int]) -> dict[int, tuple[str, int]]:
    return {i: ((st := await c.stats(i))["coordinator"], st["term"]) for i in nodes}


async def healed(c: Cluster, owners: list[int]) -> None:
    """One coordinator, full redundancy, no drop left to deliver, copies as referenced."""

    async def one_view() -> bool:
        return len(set((await views(c, list(range(5)))).values())) == 1

    await wait_until(one_view, 30, "one coordinator view")

    async def whole() -> bool:
        for i in range(5):
            st = await c.stats(i)
            if st["under_replicated_pages"] or st["orphans_pending"]:
                return False
        return True

    await wait_until(whole, 60, "redundancy whole, drops delivered", every=0.5)

    async def copies_as_referenced() -> dict[tuple[str, str], tuple[int, int]] | None:
        """None when every holder keeps, for every owner, what that owner's inventory says;
        else {(owner, holder): (held, referenced)} where they differ."""
        stats = {f"n{i}": await c.stats(i) for i in range(5)}
        off = {}
        for owner, st in stats.items():
            for holder, hst in stats.items():
                referenced = st["inventory"].get(holder, 0)
                held = hst["lent"]["by_owner"].get(owner, 0)
                if held != referenced:
                    off[(owner, holder)] = (held, referenced)
        return off or None

    async def settled() -> bool:
        return await copies_as_referenced() is None

    try:
        await wait_until(settled, 30, "copies as referenced", every=0.5)
    except TimeoutError:
        off = await copies_as_referenced()
        raise AssertionError(f"(held, referenced) per (owner, holder): {off}") from None


@pytest.mark.asyncio
async def test_a_partition_longer_than_the_owner_grace_loses_nothing(
    cluster: Cluster, lab: NetnsLab
) -> None:
    """{n0, n1} | {n2, n3, n4} for longer than the grace, writers n0 and n3 on both sides:
    two coordinators, holders reclaim the other side's owners, and after healing those owners
    learn it and repair."""
    await cluster.start_all(within=30)
    writers = [Writer(cluster, 0, random.Random(1)), Writer(cluster, 3, random.Random(2))]
    await asyncio.gather(*(w.write(24) for w in writers))
    before = await views(cluster, list(range(5)))
    term = max(t for _, t in before.values())
    lab.partition([[0, 1], [2, 3, 4]])
    try:

        async def two_coordinators() -> bool:
            v = await views(cluster, [0, 2])
            return v[0][0] == "n0" and v[2][0] == "n2"

        await asyncio.gather(
            *(w.write_for(GRACE + 4) for w in writers),
            wait_until(two_coordinators, 15, "a coordinator on each side"),
        )
    finally:
        lab.heal()
    await cluster.wait_ready(within=30)
    await healed(cluster, [0, 3])
    after = await views(cluster, list(range(5)))
    assert {v for v in after.values()} == {("n0", max(t for _, t in after.values()))}
    assert max(t for _, t in after.values()) > term
    reclaimed = [(await cluster.stats(i))["remote"]["holders_reclaimed"] for i in (0, 3)]
    assert sum(reclaimed) > 0, "no holder reclaimed across the partition: make it longer"
    for w in writers:
        assert w.stored > 0
        await w.verify()


@pytest.mark.asyncio
async def test_an_isolated_owner_loses_nothing(cluster: Cluster, lab: NetnsLab) -> None:
    """n4 alone for longer than dead_after (shorter than the grace) while it and n0 write."""
    await cluster.start_all(within=30)
    writers = [Writer(cluster, 4, random.Random(3)), Writer(cluster, 0, random.Random(4))]
    await asyncio.gather(*(w.write(24) for w in writers))
    lab.partition([[4], [0, 1, 2, 3]])
    try:
        await asyncio.gather(*(w.write_for(3.0) for w in writers))
        st = await cluster.stats(4)
        assert st["coordinator"] == "n4"  # alone, it coordinates itself
    finally:
        lab.heal()
    await cluster.wait_ready(within=30)
    await healed(cluster, [4, 0])
    for w in writers:
        await w.verify()
