"""A host in the middle: accepts connections, dials the real server, and forwards frames both
ways, recording every byte; a test decides what happens to each frame after the handshake
(forward it, change it, hold it back, send it twice, send another in front of it)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

HANDSHAKE_FRAMES = 2
"""Frames each way that belong to the handshake (HELLO, AUTH / CHALLENGE, READY)."""

Tamper = Callable[[int, bytes], list[bytes]]
"""(index of the frame after the handshake, whole frame) -> the frames to send instead."""


def forward(index: int, frame: bytes) -> list[bytes]:
    """Pass every frame on unchanged."""
    return [frame]


@dataclass
class Relay:
    """Relays 127.0.0.1:port to upstream host:port; `upstream`/`downstream` tamper with the
    frames going to the server and back to the client."""

    upstream_host: str
    upstream_port: int
    upstream: Tamper = forward
    downstream: Tamper = forward
    port: int = 0
    captured: bytearray = field(default_factory=bytearray)
    """Every byte that passed, both ways."""
    connections: int = 0
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """host:port to dial instead of the real server."""
        return f"127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, "upstream")),
            asyncio.ensure_future(self._pump(up_reader, writer, "downstream")),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        await asyncio.wait(pumps)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        index = -HANDSHAKE_FRAMES
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack(">I", header)
                frame = header + await reader.readexactly(length)
                self.captured += frame
                tamper: Tamper = getattr(self, direction)  # the test may change it meanwhile
                out = [frame] if index < 0 else tamper(index, frame)
                index += 1
                for data in out:
                    writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self._server is not None:
            await self._server.wait_closed()
