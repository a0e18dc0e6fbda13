"""Ephemeral areas, case by case: kinds, counters, pressure, spilling with one copy, and holders
that lose, evict or spoil their copies (misses, never wrong bytes, nothing repaired)."""

from __future__ import annotations

import random

import pytest

from ramster.errors import InvalidPage
from ramster.frontswap.local import LocalFrontswap
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PagePool, PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import PageBatch
from ramster.testing import corpus
from ramster.testing.inproc import InProcessHolders
from ramster.types import Incarnation, NodeId

PAGES = corpus.pages(16, seed=3)
HOLDERS = ("h1", "h2", "h3")


def page(k: int) -> bytes:
    return PAGES[k % len(PAGES)]


def cluster(
    local: int = 1 << 20, lent: int = 4 << 20, replicated: bool = False
) -> tuple[RemoteTier, dict[str, LentPool]]:
    lents = {h: LentPool(PoolConfig(budget_bytes=lent)) for h in HOLDERS}
    fs = RemoteTier(
        PoolConfig(budget_bytes=local),
        InProcessHolders("o1", "00000001-a", lents),
        SpillConfig(replicas=2, batch_pages=64, depth=2),
        rng=random.Random(1),
        replicated=replicated,
    )
    return fs, lents


@pytest.mark.asyncio
async def test_kinds_are_checked_and_kept() -> None:
    fs = LocalFrontswap()
    await fs.init(1, "ephemeral")
    await fs.init(1, "ephemeral")  # idempotent
    with pytest.raises(InvalidPage, match="is ephemeral"):
        await fs.init(1)
    with pytest.raises(InvalidPage, match="persistent or ephemeral"):
        await fs.init(2, "volatile")  # type: ignore[arg-type]
    await fs.invalidate_area(1)
    await fs.init(1)  # a new life may have the other kind
    assert fs.kind_of(1) == "persistent" and not fs.pool.is_ephemeral(1)
    replicated, _ = cluster(replicated=True)
    with pytest.raises(InvalidPage, match="no ephemeral areas"):
        await replicated.frontswap.init(0, "ephemeral")


@pytest.mark.asyncio
async def test_cleancache_counters() -> None:
    fs = LocalFrontswap()
    await fs.init(1, "ephemeral")
    await fs.init(0)
    assert all(await fs.store_many(1, [0, 1, 2], [page(0), page(1), page(2)]))
    await fs.store_many(0, [0], [page(0)])  # persistent pages count nowhere here
    assert await fs.load_many(1, [0, 1, 7]) == [page(0), page(1), None]
    assert await fs.load(1, 2, exclusive=True) == page(2)
    assert await fs.load(1, 2) is None  # an exclusive hit frees the page, as cleancache's
    await fs.invalidate_many(1, [0])
    cc = fs.statistics().cleancache
    assert cc == {"puts": 3, "succ_gets": 3, "failed_gets": 2, "invalidates": 1, "evicts": 0}


@pytest.mark.asyncio
async def test_persistent_stores_take_the_room_of_ephemeral_pages() -> None:
    fs = LocalFrontswap(PoolConfig(budget_bytes=2 << 20))
    await fs.init(0)
    await fs.init(1, "ephemeral")
    for start in range(0, 4096, 256):  # far past the budget: the oldest are evicted
        keys = list(range(start, start + 256))
        assert all(await fs.store_many(1, keys, [page(k) for k in keys]))
    st = fs.pool.statistics()
    assert st.evicts > 0 and st.ephemeral_pages == st.stored_pages
    assert await fs.load_many(1, [4095, 4000]) == [page(4095), page(4000)]  # newest stay
    stored = 0
    for start in range(0, 4096, 64):
        keys = list(range(start, start + 64))
        ok = await fs.store_many(0, keys, [page(k + 1) for k in keys])
        stored += sum(ok)
        if not all(ok):
            # Refused only once the budget holds persistent pages alone.
            assert fs.pool.ephemeral_keys() == 0
            break
    st = fs.pool.statistics()
    assert stored > 500 and st.ephemeral_pages == 0
    assert st.failed_stores == 64 - ok.count(True)  # retries are not counted as refusals
    # Every persistent page kept is there, exactly.
    got = await fs.load_many(0, list(range(stored)))
    assert got == [page(k + 1) for k in range(stored)]


def test_a_batch_never_evicts_its_own_pages() -> None:
    pool = PagePool(PoolConfig(budget_bytes=512 << 10))
    pool.set_ephemeral(1, True)
    keys = list(range(1000))
    ok = pool.put_many(1, keys, [page(k) for k in keys], keys)
    kept = sum(ok)
    assert 0 < kept < 1000 and pool.statistics().evicts == 0
    assert pool.get_many(1, [k for k, f in zip(keys, ok, strict=True) if f]).count(None) == 0


def test_lent_ephemeral_copies_make_room_for_persistent_ones() -> None:
    lent = LentPool(PoolConfig(budget_bytes=2 << 20))
    cfg = lent.pool.config

    def put(owner: str, keys: list[int], ephemeral: bool) -> list[bool]:
        pages = [page(k) for k in keys]
        return lent.put(
            owner,
            "00000001-x",
            PageBatch(
                [0] * len(keys),
                keys,
                [1] * len(keys),
                [checksum(p) for p in pages],
                [encode(p, cfg) for p in pages],
            ),
            ephemeral,
        )

    for start in range(0, 2048, 256):
        put("eph", list(range(start, start + 256)), True)
    full_of_ephemeral = lent.free_bytes()
    assert lent.pool.statistics().evicts > 0
    # Ephemeral pages count as room for persistent ones.
    assert full_of_ephemeral > (2 << 20) // 2
    kept = 0
    for start in range(0, 2048, 128):
        ok = put("per", list(range(start, start + 128)), False)
        kept += sum(ok)
        if not all(ok):
            assert lent.pool.ephemeral_keys() == 0
            break
    assert kept > 600 and lent.pool.ephemeral_pages == 0


async def spilled(fs: RemoteTier, n: int = 512) -> list[int]:
    await fs.frontswap.init(1, "ephemeral")
    keys = list(range(n))
    assert all(await fs.frontswap.store_many(1, keys, [page(k) for k in keys]))
    fs.pool.config = PoolConfig(budget_bytes=64 << 10)  # squeeze: the spiller moves them out
    await fs.spill_once()
    return keys


@pytest.mark.asyncio
async def test_ephemeral_pages_spill_with_one_copy() -> None:
    fs, lents = cluster()
    keys = await spilled(fs)
    remote = fs.remote_statistics()
    assert remote["ephemeral_spilled_pages"] > 300
    held = sum(lent.pool.statistics().stored_pages for lent in lents.values())
    assert held == remote["ephemeral_spilled_pages"]  # one copy each
    assert all(
        lent.pool.ephemeral_pages == lent.pool.statistics().stored_pages for lent in lents.values()
    )
    assert await fs.frontswap.load_many(1, keys) == [page(k) for k in keys]
    assert fs.under_replicated(set()) == 0


@pytest.mark.asyncio
async def test_a_lost_holder_costs_misses_and_no_repair() -> None:
    fs, lents = cluster()
    keys = await spilled(fs)
    holders = fs.holders
    assert isinstance(holders, InProcessHolders)
    holders.down.add("h1")
    assert fs.under_replicated({"h1"}) == 0
    assert await fs.repair({"h1"}) == 0  # nothing is repaired: a lost ephemeral page is a miss
    got = await fs.frontswap.load_many(1, keys)
    on_h1 = set(lents["h1"].pool.area_offsets(0).tolist())
    assert on_h1, "h1 held some of the pages"
    for k, p in zip(keys, got, strict=True):
        assert p is None if k in on_h1 else p == page(k)
    assert fs.remote_statistics()["ephemeral_misses"] == len(on_h1)
    # The records of the missed pages are gone: asked again, nobody is asked.
    assert fs.pool.remote_entries(1, sorted(on_h1)) == []
    # A restarted holder: its copies are gone, loads miss, nothing comes back wrong.
    holders.down.clear()
    lents["h2"] = LentPool(PoolConfig(budget_bytes=4 << 20))
    fs.holder_restarted(NodeId("h2"), Incarnation("old"))
    got = await fs.frontswap.load_many(1, keys)
    assert all(p is None or p == page(k) for k, p in zip(keys, got, strict=True))


@pytest.mark.asyncio
async def test_spoiled_copies_are_misses() -> None:
    fs, lents = cluster()
    keys = await spilled(fs)
    spoiled = 0
    for lent in lents.values():
        for off in lent.pool.area_offsets(0).tolist():
            item = lent.pool.get_stored_many(0, [off])[0]
            if item is not None and len(item[2]) > 8:
                lent.damage_for_test("o1", 1, off, stale=spoiled % 2 == 1)
                spoiled += 1
    got = await fs.frontswap.load_many(1, keys)
    assert all(p is None or p == page(k) for k, p in zip(keys, got, strict=True))
    assert got.count(None) == spoiled
    assert fs.remote_statistics()["remote_bad_copies"] == spoiled
