"""A hand-driven peer over asyncio streams: sends exact bytes, reads frames back, and after a
handshake seals and opens frames with the session keys it derived."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgpack  # type: ignore[import-untyped]

from ramster.rpc.auth import ClientHandshake, Secret, SessionKeys
from ramster.rpc.const import TAG_BYTES
from ramster.rpc.session import Identity

GUARD = 5.0
"""No test waits longer than this for a peer; tests that time things check elapsed time."""


def frame(obj: object) -> bytes:
    """msgpack-encode obj and prefix its length."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def sealed_frame(keys: SessionKeys, obj: object) -> bytes:
    """obj as the next frame sealed with keys (consumes one nonce of the sending direction)."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return b"".join(keys.sealer.seal(struct.pack(">I", len(body) + TAG_BYTES), body))


class RawPeer:
    """One TCP connection driven by the test, byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent: list[bytes] = []
        self.keys: SessionKeys | None = None

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        """Open a connection to 127.0.0.1:port."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write bytes and drain."""
        self.sent.append(data)
        self.writer.write(data)
        await self.writer.drain()

    async def send_obj(self, obj: object) -> None:
        """Write one framed message (sealed once the handshake gave keys)."""
        if self.keys is not None:
            await self.send(sealed_frame(self.keys, obj))
        else:
            await self.send(frame(obj))

    async def recv_body(self) -> bytes | None:
        """Read one frame's body as it came; None on EOF (TimeoutError after GUARD seconds)."""
        async with asyncio.timeout(GUARD):
            try:
                header = await self.reader.readexactly(4)
            except asyncio.IncompleteReadError:
                return None
            (length,) = struct.unpack(">I", header)
            try:
                return await self.reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return None

    async def recv(self) -> object:
        """Read one message (opened once the handshake gave keys); None on EOF."""
        body = await self.recv_body()
        if body is None:
            return None
        if self.keys is not None:
            body = bytes(self.keys.opener.open(memoryview(body), 0))
        return msgpack.unpackb(body, raw=False)

    async def closed_by_peer(self) -> bool:
        """True once the server closed the connection (TimeoutError after GUARD seconds)."""
        async with asyncio.timeout(GUARD):
            with contextlib.suppress(ConnectionError):
                while await self.reader.read(65536):
                    pass
        return True

    async def handshake(
        self,
        secret: Secret,
        cluster: str,
        identity: Identity | None = None,
        *,
        encrypt: bool = True,
    ) -> object:
        """Run the client handshake; the last message the server sent (READY on success)."""
        hs = ClientHandshake(secret, cluster, identity, encrypt=encrypt)
        await self.send_obj([2, "ramster.hello", hs.hello()])
        challenge = await self.recv()
        assert isinstance(challenge, list)
        if challenge[1] != "ramster.challenge":
            return challenge
        await self.send_obj([2, "ramster.auth", hs.challenge(challenge[2])])
        self.keys = hs.keys
        return await self.recv()

    async def close(self) -> None:
        """Close without waiting for the peer."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
