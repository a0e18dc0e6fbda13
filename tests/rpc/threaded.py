"""An RPC server (and a good client of it) on an event loop in a background thread, so that
synchronous hypothesis tests can throw bytes at a live server between checks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ramster.rpc import RpcClient, RpcConfig, RpcServer, Secret, new_event_loop
from ramster.rpc.testing import DictPageStore

T = TypeVar("T")


class ServerThread:
    """Start with start(), stop with stop(); run(coro) executes on the server's loop."""

    def __init__(self, secret: Secret, config: RpcConfig) -> None:
        self.loop = new_event_loop()
        self.server = RpcServer(secret, config)
        self.server.register_pages(DictPageStore())
        self.client = RpcClient("127.0.0.1", 0, secret, config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        """Run the loop and start the server and its client."""
        self._thread.start()
        self.run(self.server.start())
        self.client.port = self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run coro on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Close client and server, stop the loop, join the thread."""
        self.run(self.client.close())
        self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
