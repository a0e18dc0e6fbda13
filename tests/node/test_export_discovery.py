"""A node that finds its members by mDNS and knows none yet does not start an export it has no
record of as new (third review, finding 5): nobody to hear may only mean nobody found yet."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.node.config import NodeConfig
from ramster.node.export_served import DISCOVERY_SETTLE
from ramster.node.node import Node
from ramster.rpc import Secret

pytestmark = pytest.mark.asyncio
SECRET = Secret(b"discovery-secret-0123456789abcdef")


async def test_an_export_unknown_to_a_node_that_found_nobody_yet_waits_for_discovery(
    tmp_path: Path,
) -> None:
    config = NodeConfig(
        node_id="n",
        listen="127.0.0.1:0",
        state_dir=tmp_path,
        local_budget=4 << 20,
        lent_budget=16 << 20,
        admin_listen=None,
        heartbeat=0.1,
        dead_after=0.5,
    )
    n = Node(config, SECRET)
    await n.start()
    try:
        # As if started with mDNS (no multicast here: the service only reads the setting).
        n.exports.opener.config = dataclasses.replace(config, mdns_interface="127.0.0.1")
        started = time.monotonic()
        export = n.exports.build(ExportSpec("x", 1 << 20, 31, REPLICATED), const.MAX_PAYLOAD)
        opening = asyncio.create_task(export.open())
        await asyncio.sleep(0.4)
        assert not opening.done()
        assert n.exports.served["x"].state == "hearing"
        await asyncio.wait_for(opening, 10)
        # Served as new only once discovery had its time.
        assert time.monotonic() - started >= DISCOVERY_SETTLE * config.dead_after - 0.3
        assert n.exports.served["x"].state == "serving"
    finally:
        await n.close()
