"""Ephemeral areas on real node processes: the cache helper, pressure from persistent pages
here and on holders, a holder killed (misses, no repair), and the counters operators read."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from ramster.client import PageCache
from ramster.testing import corpus
from ramster.testing.wait import wait_until
from tests.conftest import ClusterFactory

MiB = 1 << 20
EPH = 5


async def fill(client, area: int, n: int, seed: int, batch: int = 256) -> list[bytes]:  # type: ignore[no-untyped-def]
    pages = corpus.pages(n, seed=seed)
    for i in range(0, n, batch):
        await client.store_many(area, list(range(i, min(n, i + batch))), pages[i : i + batch])
    return pages


@pytest.mark.asyncio
async def test_the_cache_helper_on_a_node(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(1, local_budget="8MiB", lent_budget="1MiB")
    await c.start_all()
    async with c.client(0) as client:
        cache = PageCache(client, area=EPH)
        await cache.open()
        values = corpus.pages(64, seed=9)
        items = [(f"key-{i}".encode(), values[i][: 100 + 97 * i]) for i in range(64)]
        assert all(await cache.set_many(items))
        keys = [k for k, _ in items]
        assert await cache.get_many(keys) == [v for _, v in items]
        assert await cache.get(b"absent") is None
        big = b"".join(values[:5])[:-30]  # several pages: a second round trip
        assert await cache.set(b"big", big)
        assert await cache.get(b"big") == big
        # The attack: the first page of a newer value over the pages of an older one (a store
        # that reached only part of the slot). Its header asks for pages it does not own.
        rng = np.random.default_rng(4)
        older, newer = rng.bytes(3 * 4096), rng.bytes(2 * 4096)
        first = cache._first(b"mixed")
        await client.store_many(EPH, list(range(first, first + 4)), cache._pages(b"mixed", older))
        await client.store_many(EPH, [first], cache._pages(b"mixed", newer)[:1])
        assert await cache.get(b"mixed") is None  # a miss, never bytes of two values
        await cache.delete(b"key-3")
        assert await cache.get(b"key-3") is None
        with pytest.raises(ValueError, match="at most"):
            await cache.set(b"huge", bytes(cache.max_value_bytes + 1))
        st = (await client.stats())["ephemeral"]
    assert st["areas"] == [EPH] and st["succ_gets"] >= 66 and st["failed_gets"] >= 2
    assert st["puts"] > 0 and st["invalidates"] == cache.max_pages


@pytest.mark.asyncio
async def test_persistent_pages_evict_ephemeral_ones_here_and_on_holders(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="4MiB", lent_budget="16MiB")
    await c.start_all()
    await c.wait_ready()
    async with c.client(0) as owner, c.client(1) as other:
        await owner.init(EPH, "ephemeral")
        eph = await fill(owner, EPH, 8192, seed=1)  # ~16 MiB stored: past n0's budget
        await wait_until(lambda: _spilled(c), within=20)
        # Another owner fills the holders' lent pools with persistent pages: they fit only
        # where n0's ephemeral pages were (n2's lent pool), which make room.
        await other.init(0)
        pers = await fill(other, 0, 6144, seed=2)
        assert await _loads(other, 0, 6144) == pers  # none refused, every one exact
        assert (await c.stats(2))["lent"]["evicts"] > 0
        got = await _loads(owner, EPH, 8192)
        assert all(p is None or p == eph[i] for i, p in enumerate(got))
        st = (await owner.stats())["ephemeral"]
        assert st["failed_gets"] > 0 and st["succ_gets"] > 0
        assert st["succ_gets"] + st["failed_gets"] == 8192


async def _spilled(c) -> bool:  # type: ignore[no-untyped-def]
    return bool((await c.stats(0))["ephemeral"]["spilled_pages"] > 0)


async def _loads(client, area: int, n: int) -> list[bytes | None]:  # type: ignore[no-untyped-def]
    out: list[bytes | None] = []
    for i in range(0, n, 512):
        out += await client.load_many(area, list(range(i, min(n, i + 512))))
    return out


@pytest.mark.asyncio
async def test_a_killed_holder_costs_misses_and_no_repair(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3, local_budget="4MiB", lent_budget="32MiB")
    await c.start_all()
    await c.wait_ready()
    async with c.client(0) as owner:
        await owner.init(EPH, "ephemeral")
        eph = await fill(owner, EPH, 6144, seed=4)
        await wait_until(lambda: _spilled(c), within=20)
        before = await c.stats(0)
        c.kill(1)  # SIGKILL
        await wait_until(lambda: _gone(c, "n1"), within=20)
        await asyncio.sleep(1.0)  # a repair order would have come by now
        got = await _loads(owner, EPH, 6144)
        assert all(p is None or p == eph[i] for i, p in enumerate(got))
        after = await c.stats(0)
    assert got.count(None) > 0
    assert after["remote"]["repaired_pages"] == before["remote"]["repaired_pages"] == 0
    assert after["under_replicated_pages"] == 0  # ephemeral pages never count as such
    assert after["ephemeral"]["remote_misses"] > 0


async def _gone(c, node: str) -> bool:  # type: ignore[no-untyped-def]
    return node in (await c.stats(0))["gone_peers"]


@pytest.mark.asyncio
async def test_counters_in_the_admin_api_and_metrics(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(1, local_budget="2MiB", lent_budget="1MiB")
    await c.start_all()
    async with c.client(0) as client:
        await client.init(EPH, "ephemeral")
        await fill(client, EPH, 2048, seed=5)  # ~4 MiB into 2: evictions
        await client.load_many(EPH, list(range(64)))
    url = await c.admin_url(0)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/node") as r:
            node = await r.json()
        async with http.get(f"{url}/v1/areas") as r:
            areas = (await r.json())["areas"]
        async with http.get(f"{url}/metrics") as r:
            metrics = await r.text()
    eph = node["ephemeral"]
    assert eph["puts"] == 2048 and eph["evicts"] > 0 and eph["failed_gets"] > 0
    assert node["pool"]["ephemeral_pages"] == eph["pages"] > 0
    assert {"area": EPH, "kind": "ephemeral"}.items() <= areas[0].items()
    for name in ("puts", "succ_gets", "failed_gets", "evicts", "invalidates"):
        assert f"ramster_cleancache_{name}_total" in metrics
    assert 'ramster_pool_evicts_total{pool="local"}' in metrics
