"""Fixtures for NBD tests: an in-process server over a real local pool, on a free port."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio
import uvloop

from ramster.frontswap import LocalFrontswap
from ramster.nbd import NbdConfig, NbdServer, local_exports, parse_exports
from ramster.pagestore import PoolConfig

ServerFactory = Callable[..., Awaitable[NbdServer]]


def port_of(server: NbdServer) -> int:
    """The port a started server listens on."""
    return int(server.address.rsplit(":", 1)[1])


def uri(server: NbdServer, export: str = "") -> str:
    """nbd://127.0.0.1:PORT/EXPORT for the tools."""
    return f"nbd://127.0.0.1:{port_of(server)}/{export}"


LISTENING = re.compile(r"listening on (\S+)")


@pytest_asyncio.fixture
async def nbd_factory() -> AsyncIterator[ServerFactory]:
    """Start servers on 127.0.0.1:0 (exports, budget and limits as asked); all closed after."""
    made: list[NbdServer] = []

    async def factory(
        *exports: str, budget: int = 256 << 20, frontswap: Any = None, **config: Any
    ) -> NbdServer:
        fs = frontswap or LocalFrontswap(PoolConfig(budget_bytes=budget))
        nbd_config = NbdConfig(
            exports=parse_exports(exports or ("swap0:64MiB",)),
            listen="127.0.0.1:0",
            swap_safety=False,
            **config,
        )
        server = NbdServer(nbd_config)
        made.append(server)
        await server.start(local_exports(fs, nbd_config))
        return server

    yield factory
    for server in made:
        await server.close()


@pytest_asyncio.fixture
async def nbd_server(nbd_factory: ServerFactory) -> NbdServer:
    """One server with exports swap0 (64 MiB) and small (1 MiB)."""
    return await nbd_factory("swap0:64MiB", "small:1MiB")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Server tests run on the stdlib loop and on uvloop (what `ramster nbd` uses); the tool
    tests, which spend their time in other processes, on uvloop only."""
    if item.nodeid.startswith("tests/nbd/test_server.py"):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}
