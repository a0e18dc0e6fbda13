"""A holder's restart heard late must not take what its new incarnation holds (simulation, seed
93 in an earlier tree): the owner put pages on the restarted holder's new incarnation, and only
then heard from the failure detector that the old one was gone. Burying the node then counted
the new copies as lost and queued their drops; with the other holder dead too, pages were lost
that two live copies had held. Now each put's answer says which incarnation kept the pages
(`cluster.calls.Kept`): the first answer from a new one buries the old one at once, and the
late word of the restart is no news."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ramster.cluster.calls import Kept
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import Keys, PageBatch
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders
from ramster.types import Incarnation, NodeId

pytestmark = pytest.mark.asyncio
INC = "00000001-owner"
OLD, NEW, NEWER = (
    Incarnation("0000000000000001-b"),
    Incarnation("0000000000000002-b"),
    Incarnation("0000000000000003-b"),
)
B = NodeId("B")
LOCAL = 1 << 20
LENT = 16 << 20


class Restarting(InProcessHolders):
    """In-process holders whose answers name the incarnation that gave them."""

    def __init__(self, lents: dict[str, LentPool]) -> None:
        super().__init__("owner", INC, lents)
        self.incarnation_of = {n: Incarnation("0000000000000001-" + n.lower()) for n in lents}

    def restart(self, node: str, incarnation: Incarnation) -> None:
        """The holder's process is replaced: an empty lent pool, a new incarnation."""
        self.lents[node] = LentPool(PoolConfig(budget_bytes=LENT))
        self.incarnation_of[node] = incarnation

    def _named(self, node: str, flags: list[bool]) -> Kept:
        kept = Kept(flags)
        kept.incarnation = self.incarnation_of[node]
        return kept

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        return self._named(node, await super().put(node, batch, ephemeral))

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        flags, sent = await super().copy(source, target, keys, versions, checksums)
        return self._named(target, flags), sent


async def _spilled(fs: RemoteTier, first: int, count: int, seed: int) -> list[bytes]:
    pages = corpus.pages(count, seed=seed)
    for i in range(0, count, 64):
        keys = list(range(first + i, first + i + 64))
        assert all(await fs.frontswap.store_many(0, keys, pages[i : i + 64]))
        await fs.spill_once()
    return pages


N = 2 * LOCAL // 4096
"""Pages stored by each `_spilled` call: twice the local pool, so that half spill."""


def _lents(*nodes: str) -> dict[str, LentPool]:
    return {n: LentPool(PoolConfig(budget_bytes=LENT)) for n in nodes}


async def _owner(holders: Restarting, b: Incarnation) -> tuple[RemoteTier, list[bytes]]:
    """An owner whose first N pages are stored (half spilled) while B runs as `b`."""
    holders.incarnation_of["B"] = b
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL),
        holders,
        SpillConfig(replicas=2, batch_pages=64),
        rng=random.Random(3),
    )
    await fs.frontswap.init(0)
    return fs, await _spilled(fs, 0, N, seed=1)


async def test_a_late_restart_notice_leaves_the_new_incarnations_copies() -> None:
    holders = Restarting(_lents("A", "B"))
    fs, _ = await _owner(holders, OLD)
    # B restarts; the owner spills more before its failure detector says so.
    holders.restart("B", NEW)
    later = await _spilled(fs, N, N, seed=2)
    # remote_entries names positions in the list asked about.
    remote = [N + int(e[0]) for e in fs.pool.remote_entries(0, list(range(N, 2 * N)))]
    assert remote
    held = holders.lents["B"].get("owner", INC, [0] * len(remote), remote)
    on_b = sum(g is not None for g in held)
    assert on_b == len(remote), "the new incarnation holds the later copies"
    # The failure detector's word comes now: the old incarnation is gone (no news).
    fs.holder_restarted(B, OLD, NEW)
    assert await fs.settle_drops(2.0)
    # A dies: every later page still loads, from B's new incarnation.
    holders.down.add("A")
    got = await fs.frontswap.load_many(0, remote)
    assert got == [later[i - N] for i in remote]


async def test_the_first_answer_of_a_new_incarnation_buries_the_old_one() -> None:
    """The earlier copies on B's old incarnation count as lost from its first new answer on
    (repair gives them new copies), not only once the failure detector says so."""
    holders = Restarting(_lents("A", "B", "C"))
    holders.down.add("C")
    fs, _ = await _owner(holders, OLD)
    assert fs.under_replicated(set()) == 0
    holders.restart("B", NEW)
    await _spilled(fs, N, N, seed=2)
    assert fs.under_replicated(set()) > 0, "the old incarnation's copies still count"
    holders.down.discard("C")
    assert await fs.repair(set()) > 0
    assert fs.under_replicated(set()) == 0


async def test_an_answer_from_an_older_incarnation_keeps_nothing() -> None:
    """A process that answers as B's older incarnation once its newer one answered (a paused
    one come back, say) lives on borrowed time: what it keeps is not recorded there."""
    holders = Restarting(_lents("A", "B"))
    fs, _ = await _owner(holders, NEW)
    holders.incarnation_of["B"] = OLD
    await _spilled(fs, N, N, seed=2)
    sets = {fs.holder_set(int(e[3])) for e in fs.pool.remote_entries(0, list(range(N, 2 * N)))}
    assert sets and all("B" not in s for s in sets), sets


# -- the second review's attacks ---------------------------------------------------------------


class Hooked(Restarting):
    """`hook` runs once, when a put on B was processed and before the owner reads its answer
    (an answer in flight)."""

    def __init__(self, lents: dict[str, LentPool]) -> None:
        super().__init__(lents)
        self.hook: Callable[[], None] | None = None

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        kept = await super().put(node, batch, ephemeral)
        if node == "B" and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return kept


def _phantoms(fs: RemoteTier, holders: Restarting, count: int) -> int:
    """Pages recorded on B (by its live name) that B does not hold at that version."""
    entries = fs.pool.remote_entries(0, list(range(count)))
    on = [(int(e[0]), int(e[1])) for e in entries if "B" in fs.holder_set(int(e[3]))]
    held = holders.lents["B"].get("owner", INC, [0] * len(on), [o for o, _ in on])
    return sum(1 for (_, v), h in zip(on, held, strict=True) if h is None or h[0] != v)


async def _all_load_once_a_dies(fs: RemoteTier, holders: Restarting, pages: list[bytes]) -> None:
    """Repair what the owner knows to be short, then A dies: every page still loads."""
    for _ in range(5):
        if not fs.under_replicated(set()):
            break
        await fs.repair(set())
    await fs.settle_drops(2.0)
    holders.down.add("A")
    assert await fs.frontswap.load_many(0, list(range(len(pages)))) == pages


async def test_a_restart_heard_with_its_successor_buries_an_incarnation_it_never_named() -> None:
    """B was OLD to the failure detector; it restarted as NEW, which took this owner's copies,
    then as NEWER before a heartbeat saw NEW: the detector says (OLD, NEWER), and NEW's copies,
    gone too, are buried."""
    holders = Restarting(_lents("A", "B"))
    fs, first = await _owner(holders, OLD)
    holders.restart("B", NEW)
    later = await _spilled(fs, N, N, seed=2)
    holders.restart("B", NEWER)
    fs.holder_restarted(B, OLD, NEWER)
    assert _phantoms(fs, holders, 2 * N) == 0
    await _all_load_once_a_dies(fs, holders, first + later)


@pytest.mark.parametrize("news", ["restart", "reclaim"])
async def test_news_heard_while_an_answer_is_in_flight_still_counts(news: str) -> None:
    """B keeps a batch; before the owner reads the answer, B's copies go (its process is
    replaced, or it reclaims this owner's pages) and the owner hears so: the batch must not be
    recorded on B."""
    holders = Hooked(_lents("A", "B"))
    fs, first = await _owner(holders, OLD)
    fired: list[str] = []

    def gone() -> None:
        fired.append(news)
        if news == "restart":
            holders.restart("B", NEW)
            fs.holder_restarted(B, OLD, NEW)
        else:
            holders.lents["B"] = LentPool(PoolConfig(budget_bytes=LENT))
            fs.holder_reclaimed(B, 1)

    holders.hook = gone
    later = await _spilled(fs, N, N, seed=2)
    assert fired == [news]  # the news came with an answer in flight
    assert _phantoms(fs, holders, 2 * N) == 0
    await _all_load_once_a_dies(fs, holders, first + later)
