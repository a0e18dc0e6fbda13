"""A replicated export shows its size against what the cluster can hold for it (its live
holders' lent budgets over R), and one that cannot fit is served with a warning, or refused at
creation when the export (must-fit) or the node (refuse_oversized_exports) asks so (issue 24)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ramster.admin.openapi import SERVED_EXPORT
from ramster.cluster.exports import export_owner
from ramster.errors import ExportDoesNotFit
from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.testing.cluster import free_port
from ramster.testing.wait import wait_until
from tests.conftest import ClusterFactory, run_ramster

pytestmark = pytest.mark.asyncio
SECRET = Secret(b"capacity-secret-0123456789abcdef")
MiB = 1 << 20


def _config(tmp: Path, name: str, peers: tuple[str, ...] = ()) -> NodeConfig:
    (tmp / name).mkdir()
    return NodeConfig(
        node_id=name,
        listen="127.0.0.1:0",
        state_dir=tmp / name,
        local_budget=4 * MiB,
        lent_budget=4 * MiB,
        peers=peers,
        admin_listen=None,
        heartbeat=0.1,
        dead_after=1.0,
    )


async def test_an_export_larger_than_its_holders_can_keep_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holders = [Node(_config(tmp_path, f"h{i}"), SECRET) for i in range(2)]
    for h in holders:
        await h.start()
    s = Node(_config(tmp_path, "s", tuple(h.address for h in holders)), SECRET)
    await s.start()
    try:
        await wait_until(lambda: len(s.peers.candidates()) == 2, 10, "s hears both holders")
        for name, size in (("small", 2 * MiB), ("big", 16 * MiB)):
            export = s.exports.build(ExportSpec(name, size, 31, REPLICATED), const.MAX_PAYLOAD)
            with caplog.at_level(logging.WARNING):
                await export.open()
        served = {e["name"]: e for e in s.exports_view()["served"]}  # GET /v1/exports
        types = {"integer": int, "string": str, "boolean": bool}
        for e in served.values():  # as the OpenAPI document says
            for key, schema in SERVED_EXPORT["properties"].items():
                assert isinstance(e[key], types[schema["type"]]), (key, e[key])
        # Two holders lending 4 MiB each, R=2: 4 MiB (the server's own pool holds no copy).
        assert served["small"]["replicas"] == 2
        assert served["small"]["capacity_bytes"] == 4 * MiB and served["small"]["fits"]
        assert served["big"]["capacity_bytes"] == 4 * MiB and not served["big"]["fits"]
        assert served["big"]["state"] == "serving"  # warned of, never refused
        (event,) = [e for e in s.events.recent() if e.kind == "export-oversized"]
        assert event.node == "big"
        assert "16.0 MiB" in event.detail and "4.0 MiB" in event.detail
        assert "R=2" in event.detail and "ENOSPC" in event.detail
        assert any(
            r.levelno == logging.WARNING and "export-oversized" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await s.close()
        for h in holders:
            await h.close()


def _refused_nothing(s: Node, holders: list[Node], name: str) -> None:
    """No trace of a refused export: not served, no record, no term claimed anywhere."""
    assert name not in s.exports.served
    assert s.exports.records.get(name) is None
    assert (
        not (s.config.state_dir / "exports.json").exists()
        or name not in (s.config.state_dir / "exports.json").read_text()
    )
    for n in [s, *holders]:
        assert export_owner(name) not in n.lent.terms.claims, n.node_id


@pytest.mark.parametrize("how", ["export", "node"])
async def test_an_oversized_new_export_is_refused_when_asked_and_nothing_is_created(
    tmp_path: Path, how: str
) -> None:
    holders = [Node(_config(tmp_path, f"h{i}"), SECRET) for i in range(2)]
    for h in holders:
        await h.start()
    config = replace(
        _config(tmp_path, "s", tuple(h.address for h in holders)),
        refuse_oversized_exports=how == "node",
    )
    s = Node(config, SECRET)
    await s.start()
    try:
        await wait_until(lambda: len(s.peers.candidates()) == 2, 10, "s hears both holders")
        must_fit = how == "export"
        big = s.exports.build(
            ExportSpec("big", 16 * MiB, 31, REPLICATED, must_fit), const.MAX_PAYLOAD
        )
        with pytest.raises(ExportDoesNotFit) as refused:
            await big.open()
        message = str(refused.value)
        assert message.startswith("export big: 16.0 MiB does not fit")
        assert "can hold 4.0 MiB for it at 2 replicas" in message
        assert "8.0 MiB of RAM, 0.0 MiB of disk" in message
        _refused_nothing(s, holders, "big")
        assert s.exports_view()["served"] == []
        (event,) = [e for e in s.events.recent() if e.kind == "export-refused"]
        assert event.node == "big" and event.detail == message
        assert not [e for e in s.events.recent() if e.kind == "export-oversized"]
        # One that fits is created all the same.
        small = s.exports.build(
            ExportSpec("small", 2 * MiB, 30, REPLICATED, must_fit), const.MAX_PAYLOAD
        )
        await small.open()
        (served,) = s.exports_view()["served"]
        assert served["name"] == "small" and served["state"] == "serving" and served["fits"]
        record = s.exports.records.get("small")
        assert record is not None and record.created
    finally:
        await s.close()
        for h in holders:
            await h.close()


async def test_an_export_created_before_is_served_again_though_it_does_not_fit(
    tmp_path: Path,
) -> None:
    """The refusal is of a creation: an export that exists is never refused (its data lives
    on the holders), whatever the node's setting."""
    holders = [Node(_config(tmp_path, f"h{i}"), SECRET) for i in range(2)]
    for h in holders:
        await h.start()
    config = _config(tmp_path, "s", tuple(h.address for h in holders))
    s = Node(config, SECRET)
    await s.start()
    try:
        await wait_until(lambda: len(s.peers.candidates()) == 2, 10, "s hears both holders")
        await s.exports.build(ExportSpec("big", 16 * MiB, 31, REPLICATED), const.MAX_PAYLOAD).open()
    finally:
        await s.close()
    s = Node(replace(config, refuse_oversized_exports=True), SECRET)
    await s.start()
    try:
        await wait_until(lambda: len(s.peers.candidates()) == 2, 10, "s hears both holders again")
        spec = ExportSpec("big", 16 * MiB, 31, REPLICATED, must_fit=True)
        await s.exports.build(spec, const.MAX_PAYLOAD).open()
        assert s.exports.served["big"].state == "serving"
        assert not [e for e in s.events.recent() if e.kind == "export-refused"]
    finally:
        await s.close()
        for h in holders:
            await h.close()


@pytest.mark.slow
async def test_a_node_started_to_refuse_leaves_the_oversized_export_out(
    cluster_factory: ClusterFactory,
) -> None:
    """Real processes: `ramster node --refuse-oversized-exports` with one export that cannot
    fit and one that can; `ramster export list` and `ramster events` show what happened."""
    c = cluster_factory(3, local_budget="4MiB", lent_budget="8MiB")
    c.nodes[0].args += [
        f"--nbd=127.0.0.1:{free_port()}",
        "--export=small:4MiB",
        "--export=big:64MiB",
        "--refuse-oversized-exports",
        "--no-swap-safety",
    ]
    c.nodes[1].args += [f"--nbd=127.0.0.1:{free_port()}", "--export=big1:64MiB:must-fit"]
    c.nodes[1].args += ["--no-swap-safety"]
    await c.start_all()
    await c.wait_ready()
    admin = ["--admin", await c.admin_url(0), "--token-file", str(c.tmp / "admin.token")]

    async def listed() -> dict[str, Any]:
        ran = await asyncio.to_thread(run_ramster, "export", "list", "--json", *admin)
        assert ran.returncode == 0, ran.stderr
        view: dict[str, Any] = json.loads(ran.stdout)
        return view

    async def small_serves() -> bool:
        return [e.get("state") for e in (await listed())["served"]] == ["serving"]

    await wait_until(small_serves, 30, "small is served")
    view = await listed()
    assert [e["name"] for e in view["served"]] == ["small"]
    assert "big" not in view["servers"] and "big1" not in view["servers"]
    ran = await asyncio.to_thread(run_ramster, "events", "--json", *admin)
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    (refused,) = [e for e in events if e["kind"] == "export-refused"]
    assert refused["node"] == "big"
    assert refused["detail"].startswith("export big: 64.0 MiB does not fit")
    assert "can hold 8.0 MiB for it at 2 replicas" in refused["detail"]
    assert not [e for e in events if e["kind"] == "export-oversized"]
    log = c.nodes[0].log.read_text()
    assert "export big is not served here: export big: 64.0 MiB does not fit" in log
    records = json.loads((c.tmp / "n0" / "exports.json").read_text())
    assert [r["name"] for r in records["exports"]] == ["small"]

    # The export's own :must-fit, on a node that does not refuse by itself.
    async def n1_refused() -> bool:
        return "export big1 is not served here: export big1: 64.0 MiB" in c.nodes[1].log.read_text()

    await wait_until(n1_refused, 30, "n1 refuses big1")
    assert not (c.tmp / "n1" / "exports.json").exists()
