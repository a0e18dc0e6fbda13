"""Review of the store redesign (22147e5) and the drop fixes (f4972f4): properties that HELD.

Each test pins a point of the contract the redesign had to keep: exclusive loads through
`Chain.get`, the version limit, a plain LocalFrontswap's new load_encoded_many and its area drop,
the replicated area's read cache, and drops that outlive a holder's restart.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from ramster.errors import PageUnavailable
from ramster.frontswap.local import LocalFrontswap
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig, checksum
from ramster.pagestore.lent import LentPool, Stored
from ramster.rpc.pages import Keys
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders
from ramster.types import Incarnation, NodeId

pytestmark = pytest.mark.asyncio
INC = "00000001-test"
LOCAL = 1 << 20
LENT = 8 << 20


class GatedGets(InProcessHolders):
    """Gets wait at a gate; `fail` makes them fail once let through."""

    def __init__(self, lents: dict[str, LentPool]) -> None:
        super().__init__("owner", INC, lents)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail = False

    async def get(self, node: str, keys: Keys) -> list[Stored | None]:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            self.down.add(node)
        return await super().get(node, keys)


async def spilled_tier() -> tuple[RemoteTier, GatedGets, list[bytes], list[int], list[int]]:
    lents = {f"peer{i}": LentPool(PoolConfig(budget_bytes=LENT)) for i in range(3)}
    holders = GatedGets(lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL), holders, SpillConfig(replicas=2), rng=random.Random(2)
    )
    await fs.frontswap.init(0)
    n = 2 * LOCAL // 4096
    pages = corpus.pages(n, seed=4)
    for i in range(0, n, 64):
        assert all(await fs.frontswap.store_many(0, list(range(i, i + 64)), pages[i : i + 64]))
        await fs.spill_once()
    remote = [e[0] for e in fs.pool.remote_entries(0, list(range(n)))]
    local = [k for k in range(n) if k not in set(remote)]
    assert remote and local
    return fs, holders, pages, remote, local


async def test_an_exclusive_load_whose_remote_read_fails_frees_nothing() -> None:
    fs, holders, pages, remote, local = await spilled_tier()
    keys = [local[0], remote[0]]
    holders.fail = True
    with pytest.raises(PageUnavailable):
        await fs.frontswap.load_many(0, keys, exclusive=True)
    holders.fail = False
    holders.down.clear()
    assert await fs.frontswap.load_many(0, keys) == [pages[k] for k in keys]


async def _exclusive_load_waiting(
    fs: RemoteTier, holders: GatedGets, keys: list[int]
) -> asyncio.Future[list[bytes | None]]:
    """An exclusive load of the keys, held at the gate inside its remote read."""
    holders.gate.clear()
    holders.entered.clear()
    task = asyncio.ensure_future(fs.frontswap.load_many(0, keys, exclusive=True))
    await holders.entered.wait()
    return task


async def test_an_exclusive_load_cancelled_mid_read_frees_nothing() -> None:
    fs, holders, pages, remote, local = await spilled_tier()
    keys = [local[0], remote[0]]
    task = await _exclusive_load_waiting(fs, holders, keys)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    holders.gate.set()
    assert await fs.frontswap.load_many(0, keys) == [pages[k] for k in keys]


async def test_a_key_stored_again_during_an_exclusive_load_keeps_its_new_copy() -> None:
    fs, holders, pages, remote, local = await spilled_tier()
    keys = [local[0], remote[0]]
    task = await _exclusive_load_waiting(fs, holders, keys)
    new = bytes([7]) * 4096
    assert await fs.frontswap.store_many(0, keys, [new, new]) == [True, True]
    holders.gate.set()
    assert await task == [pages[k] for k in keys]  # what was there when the load began
    assert await fs.frontswap.load_many(0, keys) == [new, new]
    await fs.settle_drops(2.0)
    assert await fs.frontswap.load_many(0, keys) == [new, new]


async def test_the_version_limit_refuses_and_drops_old_copies_local_and_remote() -> None:
    fs, _, pages, remote, local = await spilled_tier()
    keys = [local[0], remote[0]]
    fs.start_versions_at(0, limit=fs.versions.last + 1)
    assert await fs.frontswap.store_many(0, keys, [bytes(4096)] * 2) == [False, False]
    assert await fs.frontswap.load_many(0, keys) == [None, None]  # never the old bytes
    assert fs.versions.refused == 2
    # A plain LocalFrontswap's counter has the same limit.
    plain = LocalFrontswap(PoolConfig(budget_bytes=LOCAL))
    await plain.init(0)
    assert await plain.store(0, 1, pages[0])
    plain.versions.limit = plain.versions.last
    assert not await plain.store(0, 1, pages[1])
    assert await plain.load(0, 1) is None


async def test_a_plain_local_frontswap_loads_encoded_and_drops_areas() -> None:
    fs = LocalFrontswap(PoolConfig(budget_bytes=LOCAL))
    await fs.init(0)
    await fs.init(1, "ephemeral")
    pages = corpus.pages(8, seed=9)
    assert all(await fs.store_many(0, list(range(8)), pages))
    assert all(await fs.store_many(1, list(range(8)), pages))
    got = await fs.load_encoded_many(0, [0, 3, 100])
    assert got[2] is None
    assert [g[0] for g in got[:2] if g is not None] == [checksum(pages[0]), checksum(pages[3])]
    await fs.load_encoded_many(1, [0, 100])
    assert fs.statistics().cleancache is not None
    cc = fs.statistics().cleancache
    assert cc is not None and cc["succ_gets"] == 1 and cc["failed_gets"] == 1
    await fs.invalidate_area(0)
    await fs.invalidate_area(1)
    assert fs.pool.statistics().stored_pages == 0
    assert fs.pool.drain_remote_drops() == []
    await fs.init(0)
    assert await fs.load_many(0, list(range(8))) == [None] * 8


async def test_a_replicated_area_never_serves_a_cached_page_after_overwrite_or_exclusive_load() -> (
    None
):
    lents = {f"h{i}": LentPool(PoolConfig(budget_bytes=16 << 20)) for i in range(3)}
    via = InProcessHolders("export:x", "t1@me", lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=8 << 20),
        via,
        SpillConfig(replicas=2),
        rng=random.Random(3),
        replicated=True,
        version_base=1 << 40,
        cache_bytes=1 << 20,
    )
    await fs.frontswap.init(0)
    a, b = bytes([1]) * 4096, bytes([2]) * 4096
    assert await fs.frontswap.store_many(0, [5], [a]) == [True]
    assert await fs.frontswap.load(0, 5) == a
    assert await fs.frontswap.store_many(0, [5], [b]) == [True]
    assert await fs.frontswap.load(0, 5) == b
    assert await fs.frontswap.load(0, 5, exclusive=True) == b
    assert await fs.frontswap.load(0, 5) is None
    await fs.settle_drops(2.0)
    assert sum(lent.statistics().pool.stored_pages for lent in lents.values()) == 0


async def test_drops_kept_across_a_restart_never_take_a_copy_repair_put_there() -> None:
    """f4972f4 keeps the drops queued for a holder that restarted. A page's old copy there
    had a drop queued (an orphan); after the restart a repair puts the same version on the new
    incarnation: its before_put withdraws that drop, so the new copy stays."""
    lents = {f"peer{i}": LentPool(PoolConfig(budget_bytes=LENT)) for i in range(3)}
    holders = InProcessHolders("owner", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=LOCAL), holders, SpillConfig(replicas=2), rng=random.Random(2)
    )
    await fs.frontswap.init(0)
    n = 2 * LOCAL // 4096
    pages = corpus.pages(n, seed=5)
    holders.down.add("peer2")
    for i in range(0, n, 64):
        assert all(await fs.frontswap.store_many(0, list(range(i, i + 64)), pages[i : i + 64]))
        await fs.spill_once()
    key = fs.pool.remote_entries(0, list(range(n)))[0][0]
    page = pages[key]
    [(_, version, _, set_id)] = fs.pool.remote_entries(0, [key])
    assert set(fs.holder_set(set_id)) == {"peer0", "peer1"}
    fs.queue_drops("peer1", 0, [key], [version])  # say, an orphan not yet delivered
    holders.down.add("peer1")
    holders.down.discard("peer2")
    # peer1 restarts: a new, empty incarnation; the owner hears of it.
    lents["peer1"] = LentPool(PoolConfig(budget_bytes=LENT))
    fs.holder_restarted(NodeId("peer1"), Incarnation("old"))
    holders.down.add("peer2")  # only peer1's new incarnation can take the repair
    holders.down.discard("peer1")
    assert await fs.repair(set()) > 0
    [(_, _, _, set_id)] = fs.pool.remote_entries(0, [key])
    assert set(fs.holder_set(set_id)) == {"peer0", "peer1"}
    await fs.settle_drops(2.0)
    assert lents["peer1"].get("owner", INC, [0], [key]) != [None]
    holders.down.add("peer0")
    assert await fs.frontswap.load(0, key) == page
