"""mDNS discovery on loopback: nodes with no --peer find each other and form one cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from ramster.testing import corpus
from tests.conftest import ClusterFactory
from tests.node.test_node import load_all, store_all


@pytest.mark.asyncio
async def test_nodes_find_each_other_through_mdns_alone(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(
        3,
        local_budget="2MiB",
        lent_budget="32MiB",
        static_peers=False,
        extra=["--mdns-interface=127.0.0.1"],
        cluster_name="mdns-test",
    )
    started = time.monotonic()
    for i in range(3):
        c.start(i)
    await c.wait_ready(within=20)
    formed = time.monotonic() - started
    assert formed < 15, formed
    st = await c.stats(0)
    assert {p["node"] for p in st["peers"] if p["alive"]} == {"n1", "n2"}
    # And the cluster works: pages spill to peers found by mDNS.
    pages = corpus.pages(2048, seed=15)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        assert await load_all(client, len(pages)) == pages
    assert (await c.stats(0))["pool"]["remote_pages"] > 0


@pytest.mark.asyncio
async def test_another_clusters_nodes_are_not_admitted(cluster_factory: ClusterFactory) -> None:
    a = cluster_factory(
        1, static_peers=False, extra=["--mdns-interface=127.0.0.1"], cluster_name="red"
    )
    b = cluster_factory(
        1, static_peers=False, extra=["--mdns-interface=127.0.0.1"], cluster_name="blue"
    )
    a.start(0)
    b.start(0)
    await a.wait_ready()
    await b.wait_ready()
    await asyncio.sleep(3)
    assert (await a.stats(0))["peers"] == []
    assert (await b.stats(0))["peers"] == []
