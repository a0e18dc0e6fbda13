"""A replicated export shows its size against what the cluster can hold for it (its live
holders' lent budgets over R), and one that cannot fit is served with a warning (issue 24)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ramster.admin.openapi import SERVED_EXPORT
from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.testing.wait import wait_until

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
