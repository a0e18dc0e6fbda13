"""A real node in this process, with its admin API on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret

SECRET = Secret(b"admin-test-secret-0123456789abcdef")
TOKEN = "test-admin-token-0123456789"


@contextlib.asynccontextmanager
async def started_node(tmp_path: Path, **settings: Any) -> AsyncIterator[Node]:
    """A started node "solo" with its admin API (and the token) on a free loopback port."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    config = NodeConfig(
        **{
            "node_id": "solo",
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "admin_token_file": token_file,
            "state_dir": tmp_path,
            **settings,
        }
    )
    node = Node(config, SECRET)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with started_node(tmp_path, local_budget=4 << 20, lent_budget=4 << 20) as node:
        yield node


@pytest_asyncio.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://{node.admin_address}") as session:
        yield session
