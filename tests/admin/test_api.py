"""The admin API of a real node: every endpoint, its errors, the token, the bind check."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from ramster.admin.server import check_bind
from ramster.client import Client
from ramster.errors import ConfigError
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.testing.wait import wait_until
from tests.admin.conftest import SECRET, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.asyncio
async def test_health_node_and_areas(node: Node, http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/health") as r:
        assert r.status == 200
        assert await r.json() == {
            "status": "ok",
            "live": True,
            "ready": True,
            "node": "solo",
            "version": (await r.json())["version"],
        }
    async with Client(node.address, SECRET) as client:
        await client.init(3)
        assert all(await client.store_many(3, [1, 2], [b"x" * 4096, bytes(4096)]))
    async with http.get("/v1/node") as r:
        body = await r.json()
    assert body["node"] == "solo" and body["role"] == "coordinator"
    assert body["budgets"] == {"local": 4 << 20, "lent": 4 << 20}
    assert body["pool"]["stored_pages"] == 2 and body["pool"]["same_filled_pages"] == 2
    assert body["counters"]["stores"] == 2
    async with http.get("/v1/areas") as r:
        assert await r.json() == {
            "areas": [{"area": 3, "kind": "persistent", "local_pages": 2, "remote_pages": 0}]
        }


@pytest.mark.asyncio
async def test_cluster_view_of_a_lone_node(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/cluster") as r:
        body = await r.json()
    assert body["coordinator"] == "solo" and body["answered_by"] == "solo"
    (me,) = body["members"]
    assert me["node"] == "solo" and me["state"] == "alive" and me["role"] == "coordinator"
    assert me["lent_budget"] == 4 << 20
    assert body["under_replicated_pages"] == 0
    assert body["pages"] == {}


@pytest.mark.asyncio
async def test_events_list_and_stream(node: Node, http: aiohttp.ClientSession) -> None:
    node.events.add("test-one", "solo", "first")
    async with http.get("/v1/events", params={"limit": "1000"}) as r:
        events = (await r.json())["events"]
    assert events[-1]["kind"] == "test-one"
    last = events[-1]["id"]
    async with http.get("/v1/events", params={"after": str(last)}) as r:
        assert (await r.json())["events"] == []
    async with http.get("/v1/events/stream", params={"after": str(last - 1)}) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        assert json.loads(first.split(b"data: ", 1)[1])["kind"] == "test-one"
        node.events.add("test-two", "solo", "live")
        second = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        assert second.startswith(f"id: {last + 1}\n".encode())
        assert json.loads(second.split(b"data: ", 1)[1])["detail"] == "live"
    await wait_until(lambda: node.events.subscribers == 0, 2, "the stream unsubscribed")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/nope", 404, "not-found"),
        ("/v1/events?limit=0", 400, "bad-request"),
        ("/v1/events?after=x", 400, "bad-request"),
        ("/static/../../etc/passwd", 404, "not-found"),
        ("/static/secret.py", 404, "not-found"),
    ],
)
async def test_errors_are_json_with_a_stable_code(
    http: aiohttp.ClientSession, path: str, status: int, code: str
) -> None:
    async with http.get(path) as r:
        assert r.status == status
        assert (await r.json())["error"]["code"] == code


@pytest.mark.asyncio
async def test_mutating_calls_need_the_token(node: Node, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        async with http.post("/v1/nodes/solo/drain", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "unauthorized"
    assert not node.lent.draining
    async with http.get("/v1/nodes/solo/drain") as r:
        assert r.status == 405
    async with http.post("/v1/nodes/elsewhere/drain", headers=AUTH) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "unknown-node"
    async with http.post("/v1/rebalance", headers=AUTH) as r:
        assert r.status == 202
        assert await r.json() == {"requested": True, "coordinator": "solo"}
    async with http.post("/v1/nodes/solo/drain", headers=AUTH) as r:
        assert r.status == 202
    assert node.lent.draining


@pytest.mark.asyncio
async def test_without_a_token_mutating_calls_are_refused(tmp_path: Path) -> None:
    config = NodeConfig(
        node_id="open",
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        state_dir=tmp_path,
    )
    node = Node(config, SECRET)
    await node.start()
    try:
        async with (
            aiohttp.ClientSession(base_url=f"http://{node.admin_address}") as http,
            http.post("/v1/rebalance", headers=AUTH) as r,
        ):
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "no-token-configured"
    finally:
        await node.close()


def test_a_public_address_without_a_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0:7171", None)
    with pytest.raises(ConfigError):
        check_bind("10.1.2.3:7171", None)
    assert check_bind("0.0.0.0:7171", "t") == ("0.0.0.0", 7171)
    assert check_bind("127.0.0.1:0", None) == ("127.0.0.1", 0)
    assert check_bind("[::1]:80", None) == ("::1", 80)


@pytest.mark.asyncio
async def test_metrics_in_prometheus_format(node: Node, http: aiohttp.ClientSession) -> None:
    async with Client(node.address, SECRET) as client:
        await client.init(0)
        await client.store_many(0, [1], [b"y" * 4096])
    assert node.admin is not None
    lag = node.admin.loop_lag
    await wait_until(lambda: lag.total > 0, 2, "one loop-lag probe")
    async with http.get("/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    lines = {
        line.split(" ")[0]: line.split(" ")[-1] for line in text.splitlines() if line[:1] != "#"
    }
    assert lines['ramster_pool_stored_pages{pool="local"}'] == "1.0"
    assert lines['ramster_pool_succ_stores_total{pool="local"}'] == "1.0"
    assert float(lines["ramster_rpc_calls_total"]) >= 0
    assert lines['ramster_rpc_handle_seconds_count{method="fs.store_encoded"}'] == "1.0"
    assert lines['ramster_cluster_members{state="alive"}'] == "1.0"
    assert lines["ramster_coordinator"] == "1.0"
    assert "ramster_event_loop_lag_seconds" in lines
    assert "ramster_under_replicated_pages" in lines


@pytest.mark.asyncio
async def test_the_dashboard_is_self_contained(http: aiohttp.ClientSession) -> None:
    async with http.get("/") as r:
        assert r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        html = await r.text()
    assert "/static/dashboard.js" in html
    for name in ("dashboard.js", "dashboard.css"):
        async with http.get(f"/static/{name}") as r:
            assert r.status == 200
            body = await r.text()
        body = body.replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, not a load
        assert "http://" not in body and "https://" not in body  # no external resources


@pytest.mark.asyncio
async def test_refusals_are_events_without_a_flood(node: Node, http: aiohttp.ClientSession) -> None:
    for _ in range(50):
        node.refusals("greedy", 64, "lent pool full")
    node.refusals("other", 1, "draining")
    async with http.get("/v1/events") as r:
        events = [e for e in (await r.json())["events"] if e["kind"] == "refused"]
    assert [(e["node"], e["detail"]) for e in events] == [
        ("greedy", "64 pages: lent pool full"),
        ("other", "1 pages: draining"),
    ]


@pytest.mark.asyncio
async def test_a_wildcard_listener_reports_an_address_others_can_use(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("x" * 20)
    config = NodeConfig(
        node_id="wild",
        listen="0.0.0.0:0",
        admin_listen="0.0.0.0:0",
        admin_token_file=token,
        advertise="10.9.8.7",
        state_dir=tmp_path,
    )
    node = Node(config, SECRET)
    await node.start()
    try:
        port = node.server.port
        assert node.advertised_address == f"10.9.8.7:{port}"
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{node.admin.port if node.admin else 0}"
            async with http.get(f"{url}/v1/cluster") as r:
                assert r.status == 401  # off loopback, reads need the token too
            bearer = {"Authorization": f"Bearer {'x' * 20}"}
            async with http.get(f"{url}/v1/cluster", headers=bearer) as r:
                (me,) = (await r.json())["members"]
        assert me["rpc"] == f"10.9.8.7:{port}"
        assert me["admin"].startswith("10.9.8.7:")
    finally:
        await node.close()
