"""What anonymous clients of the admin API cannot do: read without the token where reads need
it, hold more than a few event streams, or make a scrape cost more as the node holds more pages."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ramster.admin.app import MAX_STREAMS_PER_CLIENT
from ramster.client import Client
from ramster.errors import ConfigError
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.testing.wait import wait_until
from tests.admin.conftest import SECRET, TOKEN, started_node

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.asyncio
async def test_reads_can_require_the_token(tmp_path: Path) -> None:
    async with (
        started_node(tmp_path, admin_read_token=True) as node,
        aiohttp.ClientSession(base_url=f"http://{node.admin_address}") as http,
    ):
        for path in ("/v1/node", "/v1/cluster", "/v1/areas", "/v1/events", "/metrics"):
            async with http.get(path) as r:
                assert r.status == 401, path
                assert (await r.json())["error"]["code"] == "unauthorized"
            async with http.get(path, headers=AUTH) as r:
                assert r.status == 200, path
        # Liveness stays open for probes, and says nothing about who the node is.
        async with http.get("/v1/health") as r:
            assert await r.json() == {"status": "ok", "live": True, "ready": True}
        # The dashboard's files load; it sends the token it was given (#token=...).
        async with http.get("/") as r:
            assert r.status == 200
        async with http.get("/static/dashboard.js") as r:
            assert "Authorization" in await r.text()
        # Browsers open event streams without headers: the stream takes ?token= too.
        async with http.get("/v1/events/stream") as r:
            assert r.status == 401
        async with http.get("/v1/events/stream", params={"token": "wrong"}) as r:
            assert r.status == 401
        async with http.get("/v1/events/stream", params={"token": TOKEN}) as r:
            assert r.status == 200


def test_reads_need_the_token_by_default_off_loopback(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("y" * 20)
    config = NodeConfig(
        node_id="wide", admin_listen="0.0.0.0:0", admin_token_file=token, state_dir=tmp_path
    )
    node = Node(config, SECRET)
    assert node.admin is not None and node.admin.read_token
    loopback = Node(NodeConfig(node_id="near", state_dir=tmp_path), SECRET)
    assert loopback.admin is not None and not loopback.admin.read_token
    with pytest.raises(ConfigError, match="no token"):
        Node(NodeConfig(node_id="x", admin_read_token=True, state_dir=tmp_path), SECRET)


@pytest.mark.asyncio
async def test_event_streams_are_bounded_per_client(tmp_path: Path) -> None:
    async with (
        started_node(tmp_path) as node,
        aiohttp.ClientSession(base_url=f"http://{node.admin_address}") as http,
    ):
        streams = [await http.get("/v1/events/stream") for _ in range(MAX_STREAMS_PER_CLIENT)]
        try:
            assert all(r.status == 200 for r in streams)
            async with http.get("/v1/events/stream") as r:
                assert r.status == 429
                assert (await r.json())["error"]["code"] == "too-many-streams"
            assert node.events.subscribers == MAX_STREAMS_PER_CLIENT
        finally:
            for r in streams:
                r.close()
        await wait_until(lambda: node.events.subscribers == 0, 3, "the streams ended")
        # Its slots come back once they are closed.
        async with http.get("/v1/events/stream") as r:
            assert r.status == 200


def _counting(obj: object, name: str, calls: dict[str, int]) -> None:
    original: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(obj, name, counted)


@pytest.mark.asyncio
async def test_a_scrape_scans_no_pages(tmp_path: Path) -> None:
    async with (
        started_node(tmp_path, local_budget=64 << 20, heartbeat=0.5, dead_after=2.5) as node,
        aiohttp.ClientSession(base_url=f"http://{node.admin_address}") as http,
    ):
        async with Client(node.address, SECRET) as client:
            await client.init(0)
            page = bytes(range(256)) * 16
            for base in range(0, 20_000, 1000):
                assert all(await client.store_many(0, range(base, base + 1000), [page] * 1000))
        calls: dict[str, int] = {}
        pool = node.frontswap.pool
        for name in (
            "area_counts",
            "remote_count_in_sets",
            "remote_set_counts",
            "remote_in_sets",
            "coldest",
        ):
            _counting(pool, name, calls)
        scrapes = 40
        started_at = time.monotonic()
        for _ in range(scrapes):
            for path in ("/metrics", "/v1/cluster", "/v1/areas", "/v1/node"):
                async with http.get(path) as r:
                    assert r.status == 200
        elapsed = time.monotonic() - started_at
        # What scans the pool runs at most once a heartbeat, however often it is scraped.
        beats = int(elapsed / 0.5) + 2
        assert all(n <= beats for n in calls.values()), (calls, elapsed)
        assert sum(calls.values()) < scrapes

        async def counted() -> bool:
            async with http.get("/v1/areas") as r:
                areas = (await r.json())["areas"]
            return bool(
                areas
                == [{"area": 0, "kind": "persistent", "local_pages": 20_000, "remote_pages": 0}]
            )

        await wait_until(counted, 3, "the area counts, one heartbeat old at most")
