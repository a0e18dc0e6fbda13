"""Fixtures for RPC tests: a secret, short timeouts, a server with a dict store, clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import pytest_asyncio
import uvloop

from ramster.rpc import RpcClient, RpcConfig, RpcServer, Secret
from ramster.rpc.testing import DictPageStore

SECRET = Secret(b"test-secret-0123456789abcdef")

FAST = RpcConfig(
    cluster="test",
    max_message_bytes=1 << 20,
    max_in_flight=32,
    idle_timeout=2.0,
    call_timeout=5.0,
    handshake_timeout=1.0,
    connect_timeout=2.0,
    reconnect_min=0.01,
    reconnect_max=0.1,
)
"""Timing constants shortened so that timeouts are tested in fractions of a second."""


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async RPC test runs on the stdlib loop and on uvloop (what nodes use)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Harness:
    """A started server with a DictPageStore plus clients that are closed at teardown."""

    def __init__(self, server: RpcServer, store: DictPageStore) -> None:
        self.server = server
        self.store = store
        self.clients: list[RpcClient] = []

    def client(self, config: RpcConfig = FAST, secret: Secret = SECRET) -> RpcClient:
        """A client of this server."""
        client = RpcClient("127.0.0.1", self.server.port, secret, config)
        self.clients.append(client)
        return client


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    """A server on 127.0.0.1, port 0, with FAST config and a dict page store."""
    server = RpcServer(SECRET, FAST)
    store = DictPageStore()
    server.register_pages(store)
    harness = Harness(server, store)
    await server.start()
    try:
        yield harness
    finally:
        for client in harness.clients:
            await client.close()
        await server.close()
