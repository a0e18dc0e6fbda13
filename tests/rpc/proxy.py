"""A TCP proxy for tests that delays what the server sends back (and can cut connections)."""

from __future__ import annotations

import asyncio
import contextlib


class DelayProxy:
    """Forwards 127.0.0.1:port to an upstream port; answers are held back `delay` seconds."""

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update((writer, up_writer))
        forward = asyncio.ensure_future(self._pump(reader, up_writer, delayed=False))
        back = asyncio.ensure_future(self._pump(up_reader, writer, delayed=True))
        self._tasks.update((forward, back))
        await asyncio.wait([forward, back], return_when=asyncio.FIRST_COMPLETED)
        for task in (forward, back):
            task.cancel()
        await asyncio.wait([forward, back])
        self._tasks.difference_update((forward, back))
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if delayed and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for w in list(self._writers):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
