"""The frontswap contract over the RPC (fs.*): what `ramster.Client` calls.

The handlers see a `Served` frontswap, nothing else of the node. Caller mistakes become
ProtocolError and lost or corrupt pages RemoteError, so a client gets a typed answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeVar

from ramster.errors import CorruptPage, PageUnavailable, ProtocolError, RemoteError, RpcError
from ramster.frontswap.contract import Frontswap, PageLike
from ramster.protocol import (
    EPHEMERAL,
    FS_INIT,
    FS_INVALIDATE,
    FS_INVALIDATE_AREA,
    FS_LOAD,
    FS_LOAD_ENCODED,
    FS_STORE,
    FS_STORE_ENCODED,
    MAX_AREA,
    PERSISTENT,
    arity,
    integer,
)
from ramster.rpc import ANYONE, RpcServer
from ramster.rpc.const import MAX_CHECKSUM, MAX_OFFSET
from ramster.rpc.frames import Chunks
from ramster.rpc.pages import int_list
from ramster.types import Buffer

T = TypeVar("T")


class Served(Frontswap, Protocol):
    """The contract plus the stored-form calls the client uses to spare the node's CPU."""

    async def store_encoded_many(
        self,
        area: int,
        offsets: Sequence[int],
        payloads: Sequence[PageLike],
        checksums: Sequence[int],
    ) -> list[bool]:
        """Store pages already in stored form with their checksums."""
        ...

    async def load_encoded_many(
        self, area: int, offsets: Sequence[int]
    ) -> list[tuple[int, Buffer] | None]:
        """(checksum, stored payload) per key, None where not stored."""
        ...


def _pages_blob(obj: object, count: int, page_size: int) -> list[memoryview]:
    if type(obj) is not bytes or len(obj) != count * page_size:
        raise ProtocolError(f"pages must be one bin of {count} x {page_size} bytes")
    view = memoryview(obj)
    return [view[i * page_size : (i + 1) * page_size] for i in range(count)]


async def _checked(coro: Awaitable[T]) -> T:
    """Await a frontswap call, turning caller mistakes and lost pages into wire errors."""
    try:
        return await coro
    except RpcError:
        raise
    except (CorruptPage, PageUnavailable) as exc:
        raise RemoteError(f"{type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ProtocolError(str(exc)) from None


def _area(obj: object) -> int:
    return integer(obj, "area", MAX_AREA)


class FrontswapService:
    """fs.init, fs.store, fs.store_encoded, fs.load, fs.load_encoded, fs.invalidate(_area)."""

    def __init__(self, fs: Served) -> None:
        self.fs = fs

    def register(self, server: RpcServer) -> None:
        """Serve the fs.* methods on `server`."""
        server.register(FS_INIT, self.init, roles=ANYONE)
        server.register(FS_STORE, self.store, roles=ANYONE)
        server.register(FS_STORE_ENCODED, self.store_encoded, roles=ANYONE)
        server.register(FS_LOAD, self.load, roles=ANYONE)
        server.register(FS_LOAD_ENCODED, self.load_encoded, roles=ANYONE)
        server.register(FS_INVALIDATE, self.invalidate, roles=ANYONE)
        server.register(FS_INVALIDATE_AREA, self.invalidate_area, roles=ANYONE)

    async def init(self, params: list[object]) -> None:
        """fs.init [area] or [area, kind]: kind "persistent" (the default) or "ephemeral"."""
        if len(params) not in (1, 2):
            raise ProtocolError("expected params [area] or [area, kind]")
        kind = params[1] if len(params) == 2 else PERSISTENT
        if kind == PERSISTENT:
            await _checked(self.fs.init(_area(params[0])))
        elif kind == EPHEMERAL:
            await _checked(self.fs.init(_area(params[0]), "ephemeral"))
        else:
            raise ProtocolError(f"an area's kind is {PERSISTENT!r} or {EPHEMERAL!r}")

    async def store(self, params: list[object]) -> list[bool]:
        """fs.store [area, offsets, pages blob]."""
        arity(params, 3, "[area, offsets, pages]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        pages = _pages_blob(params[2], len(offsets), self.fs.page_size)
        return await _checked(self.fs.store_many(_area(params[0]), offsets, pages))

    async def store_encoded(self, params: list[object]) -> list[bool]:
        """fs.store_encoded [area, offsets, checksums, lengths, blob]."""
        arity(params, 5, "[area, offsets, checksums, lengths, blob]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        sums = int_list(params[2], "checksums", MAX_CHECKSUM, None)
        lengths = int_list(params[3], "lengths", self.fs.page_size, None)
        blob = params[4]
        if not len(offsets) == len(sums) == len(lengths):
            raise ProtocolError("offsets, checksums and lengths must have the same length")
        if type(blob) is not bytes or sum(lengths) != len(blob):
            raise ProtocolError("the lengths must add up to the blob's size")
        view = memoryview(blob)
        payloads: list[bytes | memoryview] = []
        pos = 0
        for length in lengths:
            payloads.append(view[pos : pos + length])
            pos += length
        area = _area(params[0])
        return await _checked(self.fs.store_encoded_many(area, offsets, payloads, sums))

    async def load(self, params: list[object]) -> list[object]:
        """fs.load [area, offsets, exclusive] -> [[present?], pages blob]."""
        arity(params, 3, "[area, offsets, exclusive]")
        if type(params[2]) is not bool:
            raise ProtocolError("exclusive must be a boolean")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        pages = await _checked(self.fs.load_many(_area(params[0]), offsets, params[2]))
        present = [p is not None for p in pages]
        return [present, Chunks([p for p in pages if p is not None])]

    async def load_encoded(self, params: list[object]) -> list[object]:
        """fs.load_encoded [area, offsets] -> [[present?], checksums, lengths, blob]."""
        arity(params, 2, "[area, offsets]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        items = await _checked(self.fs.load_encoded_many(_area(params[0]), offsets))
        held = [item for item in items if item is not None]
        return [
            [item is not None for item in items],
            [item[0] for item in held],
            [len(item[1]) for item in held],
            Chunks([item[1] for item in held]),
        ]

    async def invalidate(self, params: list[object]) -> None:
        """fs.invalidate [area, offsets]."""
        arity(params, 2, "[area, offsets]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        await _checked(self.fs.invalidate_many(_area(params[0]), offsets))

    async def invalidate_area(self, params: list[object]) -> None:
        """fs.invalidate_area [area]."""
        arity(params, 1, "[area]")
        await _checked(self.fs.invalidate_area(_area(params[0])))
