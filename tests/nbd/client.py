"""A hand-driven NBD client for tests: exact bytes out, replies parsed back, nothing hidden."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from ramster.nbd import const

GUARD = 10.0
"""No test waits longer than this for the server."""


def option(opt: int, data: bytes = b"") -> bytes:
    """An option header and its data."""
    return struct.pack(">QII", const.IHAVEOPT, opt, len(data)) + data


def go_data(name: str, infos: tuple[int, ...] = (const.INFO_BLOCK_SIZE,)) -> bytes:
    """The data of NBD_OPT_GO / NBD_OPT_INFO."""
    raw = name.encode()
    return (
        struct.pack(">I", len(raw))
        + raw
        + struct.pack(">H", len(infos))
        + b"".join(struct.pack(">H", i) for i in infos)
    )


def request(cmd: int, offset: int = 0, length: int = 0, handle: int = 1, flags: int = 0) -> bytes:
    """A transmission request header."""
    return struct.pack(">IHHQQI", const.REQUEST_MAGIC, flags, cmd, handle, offset, length)


class RawNbd:
    """One connection to an NBD server, driven byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.size = 0
        self.flags = 0

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawNbd:
        """Open a TCP connection (no handshake yet)."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write bytes and drain."""
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, n: int) -> bytes:
        """Exactly n bytes (IncompleteReadError on EOF)."""
        async with asyncio.timeout(GUARD):
            return await self.reader.readexactly(n)

    async def greeting(self, client_flags: int = const.CLIENT_FIXED_NEWSTYLE) -> int:
        """Read the server's greeting, send client flags; the server's handshake flags."""
        magic, opt_magic, flags = struct.unpack(">QQH", await self.recv(18))
        assert (magic, opt_magic) == (const.NBDMAGIC, const.IHAVEOPT)
        await self.send(struct.pack(">I", client_flags))
        return int(flags)

    async def option_reply(self) -> tuple[int, int, bytes]:
        """(option, reply type, data) of one option reply."""
        magic, opt, kind, length = struct.unpack(">QIII", await self.recv(20))
        assert magic == const.OPTION_REPLY_MAGIC
        return opt, kind, await self.recv(length)

    async def go(self, name: str) -> dict[int, bytes]:
        """NBD_OPT_GO; the NBD_REP_INFO payloads by info type (AssertionError on an error)."""
        await self.send(option(const.OPT_GO, go_data(name)))
        infos: dict[int, bytes] = {}
        while True:
            _, kind, data = await self.option_reply()
            if kind == const.REP_ACK:
                break
            assert kind == const.REP_INFO, (hex(kind), data)
            (info,) = struct.unpack(">H", data[:2])
            infos[info] = data[2:]
        self.size, self.flags = struct.unpack(">QH", infos[const.INFO_EXPORT])
        return infos

    @classmethod
    async def open(cls, port: int, name: str = "") -> RawNbd:
        """Connected and in transmission on export `name`."""
        client = await cls.connect(port)
        await client.greeting()
        await client.go(name)
        return client

    async def reply(self) -> tuple[int, int]:
        """(error, handle) of one simple reply."""
        magic, error, handle = struct.unpack(">IIQ", await self.recv(16))
        assert magic == const.SIMPLE_REPLY_MAGIC, hex(magic)
        return error, handle

    async def write(self, offset: int, data: bytes, handle: int = 1, flags: int = 0) -> int:
        """WRITE; the reply's error."""
        await self.send(request(const.CMD_WRITE, offset, len(data), handle, flags) + data)
        error, got = await self.reply()
        assert got == handle
        return error

    async def read(self, offset: int, length: int, handle: int = 2) -> bytes | int:
        """READ; the data, or the error number."""
        await self.send(request(const.CMD_READ, offset, length, handle))
        error, got = await self.reply()
        assert got == handle
        if error:
            return error
        return await self.recv(length)

    async def command(self, cmd: int, offset: int = 0, length: int = 0, handle: int = 3) -> int:
        """A command without payload either way (FLUSH, TRIM, WRITE_ZEROES); its error."""
        await self.send(request(cmd, offset, length, handle))
        error, got = await self.reply()
        assert got == handle
        return error

    async def closed_by_server(self) -> bool:
        """True once the server closed the connection (whatever else it sent first)."""
        async with asyncio.timeout(GUARD):
            with contextlib.suppress(ConnectionError):
                while await self.reader.read(65536):
                    pass
        return True

    async def disconnect(self) -> None:
        """NBD_CMD_DISC, then wait for the server to close."""
        await self.send(request(const.CMD_DISC))
        await self.closed_by_server()
        await self.close()

    async def close(self) -> None:
        """Close our side."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
