"""The node's RPC methods: their names, their parameter checks, and the handlers behind them.

Parameters are checked here (ProtocolError when off, never a crash) before anything runs:
- node.hello      [node_id, incarnation]                      -> {node, incarnation, ...}
- node.stats      []                                          -> {...}
- node.drain      []                                          -> {...}  (stop taking pages)
- hold.put        [owner, incarnation, page batch]            -> [kept?]  (CapacityError if none)
- hold.get        [owner, incarnation, keys]                  -> page batch of held pages
- hold.drop       [owner, incarnation, keys, versions]        -> [dropped?]
- hold.drop_area  [owner, incarnation, area]                  -> pages dropped
- hold.copy       [owner, incarnation, target, keys, versions, checksums]
                  -> [[kept on target?], bytes sent]  (verified here, then hold.put on target)
- fs.init         [area]
- fs.store        [area, offsets, pages blob]                 -> [stored?]
- fs.store_encoded [area, offsets, checksums, lengths, blob]  -> [stored?]  (client-compressed)
- fs.load         [area, offsets, exclusive]                  -> [[present?], pages blob]
- fs.load_encoded [area, offsets]             -> [[present?], checksums, lengths, blob]
- fs.invalidate   [area, offsets]
- fs.invalidate_area [area]
- coord.order     [term, coordinator, order, kind, owner, ...] (see cluster.coordinator)
- coord.rebalance []                                          -> coordinating? (even out now)
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ramster.errors import (
    CapacityError,
    CorruptPage,
    PageUnavailable,
    ProtocolError,
    RamsterError,
    RemoteError,
    RpcError,
)
from ramster.pagestore.lent import StaleIncarnation
from ramster.pagestore.verify import copyable, spread
from ramster.rpc import Keys, PageBatch
from ramster.rpc.const import MAX_CHECKSUM, MAX_OFFSET, MAX_VERSION
from ramster.rpc.frames import Chunks
from ramster.rpc.pages import int_list

if TYPE_CHECKING:
    from ramster.node import Node

HELLO = "node.hello"
DRAIN = "node.drain"
STATS = "node.stats"
HOLD_PUT = "hold.put"
HOLD_GET = "hold.get"
HOLD_DROP = "hold.drop"
HOLD_DROP_AREA = "hold.drop_area"
HOLD_COPY = "hold.copy"
FS_INIT = "fs.init"
FS_STORE = "fs.store"
FS_STORE_ENCODED = "fs.store_encoded"
FS_LOAD = "fs.load"
FS_LOAD_ENCODED = "fs.load_encoded"
FS_INVALIDATE = "fs.invalidate"
FS_INVALIDATE_AREA = "fs.invalidate_area"
COORD_ORDER = "coord.order"
COORD_REBALANCE = "coord.rebalance"

DEBUG_DAMAGE = "debug.damage"
TEST_HOOKS_ENV = "RAMSTER_TEST_HOOKS"
"""Set to 1 to serve debug.damage, which corrupts held copies: for tests only."""

MAX_ID_CHARS = 128
T = TypeVar("T")


def _text(obj: object, name: str) -> str:
    if type(obj) is not str or not 0 < len(obj) <= MAX_ID_CHARS:
        raise ProtocolError(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
    return obj


def _int(obj: object, name: str, maximum: int = (1 << 63) - 1) -> int:
    if type(obj) is not int or not 0 <= obj <= maximum:
        raise ProtocolError(f"{name} must be an integer within 0..{maximum}")
    return obj


def _arity(params: list[object], n: int, shape: str) -> None:
    if len(params) != n:
        raise ProtocolError(f"expected params {shape}")


@dataclass(slots=True)
class Owned:
    """Params that name an owner incarnation, plus the rest."""

    owner: str
    incarnation: str
    rest: list[object]


def _owned(n: int, shape: str) -> Callable[[list[object]], Owned]:
    def decode(params: list[object]) -> Owned:
        _arity(params, n, shape)
        return Owned(_text(params[0], "owner"), _text(params[1], "incarnation"), list(params[2:]))

    return decode


def _pages_blob(obj: object, count: int, page_size: int) -> list[memoryview]:
    if type(obj) is not bytes or len(obj) != count * page_size:
        raise ProtocolError(f"pages must be one bin of {count} x {page_size} bytes")
    view = memoryview(obj)
    return [view[i * page_size : (i + 1) * page_size] for i in range(count)]


def register(node: Node) -> None:
    """Serve every node method on the node's RPC server."""
    server = node.server
    fs = node.frontswap
    lent = node.lent
    ps = node.frontswap.page_size

    def hello(params: list[object]) -> dict[str, Any]:
        _arity(params, 2, "[node_id, incarnation]")
        peer, inc = _text(params[0], "node_id"), _text(params[1], "incarnation")
        try:
            lent.note_owner(peer, inc, time.monotonic())
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None
        return node.hello_info()

    def stats(params: list[object]) -> dict[str, Any]:
        _arity(params, 0, "[]")
        return node.stats()

    def drain(params: list[object]) -> dict[str, Any]:
        _arity(params, 0, "[]")
        node.start_drain()
        return node.hello_info()

    def hold_put(req: Owned) -> list[bool]:
        batch = PageBatch.from_wire(req.rest[0])
        try:
            ok = lent.put(
                req.owner,
                req.incarnation,
                batch.areas,
                batch.offsets,
                batch.versions,
                batch.checksums,
                batch.payloads,
            )
        except StaleIncarnation as exc:
            node.refused(req.owner, len(batch.offsets), "stale incarnation")
            raise ProtocolError(str(exc)) from None
        refused = ok.count(False)
        if refused:
            node.refused(req.owner, refused, "lent pool full" if not lent.draining else "draining")
        if ok and not any(ok):
            raise CapacityError(f"{node.node_id}: the lent pool is full")
        return ok

    def hold_get(req: Owned) -> list[object]:
        keys = Keys.from_wire(req.rest[0])
        try:
            held = lent.get(req.owner, req.incarnation, keys.areas, keys.offsets)
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None
        idx = [i for i, item in enumerate(held) if item is not None]
        found = [item for item in held if item is not None]
        return PageBatch(
            [keys.areas[i] for i in idx],
            [keys.offsets[i] for i in idx],
            [f[0] for f in found],
            [f[1] for f in found],
            [f[2] for f in found],
        ).to_wire()

    async def hold_copy(req: Owned) -> list[object]:
        target = _text(req.rest[0], "target")
        keys = Keys.from_wire(req.rest[1])
        n = len(keys)
        versions = int_list(req.rest[2], "versions", MAX_VERSION, n)
        sums = int_list(req.rest[3], "checksums", MAX_CHECKSUM, n)
        if target == node.node_id:
            raise ProtocolError("hold.copy onto the holder itself")
        try:
            held = lent.get(req.owner, req.incarnation, keys.areas, keys.offsets)
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None
        good, payloads = copyable(held, versions, sums, ps)
        node.copies_refused += n - len(good)
        if not good:
            return [[False] * n, 0]
        batch = PageBatch(
            [keys.areas[i] for i in good],
            [keys.offsets[i] for i in good],
            [versions[i] for i in good],
            [sums[i] for i in good],
            payloads,
        )
        try:
            kept = await node.peers.put_for(target, req.owner, req.incarnation, batch)
        except RamsterError as exc:
            raise RemoteError(f"{node.node_id} could not put on {target}: {exc}") from None
        return list(spread(n, good, kept, payloads))

    def hold_drop(req: Owned) -> list[bool]:
        keys = Keys.from_wire(req.rest[0])
        versions = int_list(req.rest[1], "versions", MAX_VERSION, None)
        if len(versions) != len(keys):
            raise ProtocolError("one version per key")
        try:
            return lent.drop(req.owner, req.incarnation, keys.areas, keys.offsets, versions)
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None

    def hold_drop_area(req: Owned) -> int:
        area = _int(req.rest[0], "area", 65535)
        try:
            return lent.drop_area(req.owner, req.incarnation, area)
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None

    async def fs_init(params: list[object]) -> None:
        _arity(params, 1, "[area]")
        await _checked(fs.init(_int(params[0], "area", 65535)))

    async def fs_store(params: list[object]) -> list[bool]:
        _arity(params, 3, "[area, offsets, pages]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        pages = _pages_blob(params[2], len(offsets), ps)
        return await _checked(fs.store_many(_int(params[0], "area", 65535), offsets, pages))

    async def fs_store_encoded(params: list[object]) -> list[bool]:
        _arity(params, 5, "[area, offsets, checksums, lengths, blob]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        sums = int_list(params[2], "checksums", MAX_CHECKSUM, None)
        lengths = int_list(params[3], "lengths", ps, None)
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
        area = _int(params[0], "area", 65535)
        return await _checked(fs.store_encoded_many(area, offsets, payloads, sums))

    async def fs_load(params: list[object]) -> list[object]:
        _arity(params, 3, "[area, offsets, exclusive]")
        if type(params[2]) is not bool:
            raise ProtocolError("exclusive must be a boolean")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        pages = await _checked(fs.load_many(_int(params[0], "area", 65535), offsets, params[2]))
        present = [p is not None for p in pages]
        return [present, Chunks([p for p in pages if p is not None])]

    async def fs_load_encoded(params: list[object]) -> list[object]:
        _arity(params, 2, "[area, offsets]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        items = await _checked(fs.load_encoded_many(_int(params[0], "area", 65535), offsets))
        held = [item for item in items if item is not None]
        return [
            [item is not None for item in items],
            [item[0] for item in held],
            [len(item[1]) for item in held],
            Chunks([item[1] for item in held]),
        ]

    async def fs_invalidate(params: list[object]) -> None:
        _arity(params, 2, "[area, offsets]")
        offsets = int_list(params[1], "offsets", MAX_OFFSET, None)
        await _checked(fs.invalidate_many(_int(params[0], "area", 65535), offsets))

    async def fs_invalidate_area(params: list[object]) -> None:
        _arity(params, 1, "[area]")
        await _checked(fs.invalidate_area(_int(params[0], "area", 65535)))

    if os.environ.get(TEST_HOOKS_ENV) == "1":

        def damage(params: list[object]) -> None:
            _arity(params, 4, "[owner, area, offset, stale]")
            lent.damage_for_test(
                _text(params[0], "owner"),
                _int(params[1], "area", 65535),
                _int(params[2], "offset"),
                params[3] is True,
            )

        server.register(DEBUG_DAMAGE, damage)

    server.register(HELLO, hello)
    server.register(STATS, stats)
    server.register(DRAIN, drain)
    server.register(COORD_ORDER, node.accept_order)

    async def rebalance(params: list[object]) -> bool:
        _arity(params, 0, "[]")
        return await node.driver.request_rebalance()

    server.register(COORD_REBALANCE, rebalance)
    server.register(HOLD_PUT, hold_put, decode=_owned(3, "[owner, incarnation, batch]"))
    server.register(HOLD_GET, hold_get, decode=_owned(3, "[owner, incarnation, keys]"))
    server.register(
        HOLD_COPY,
        hold_copy,
        decode=_owned(6, "[owner, incarnation, target, keys, versions, checksums]"),
    )
    server.register(HOLD_DROP, hold_drop, decode=_owned(4, "[owner, incarnation, keys, versions]"))
    server.register(HOLD_DROP_AREA, hold_drop_area, decode=_owned(3, "[owner, incarnation, area]"))
    server.register(FS_INIT, fs_init)
    server.register(FS_STORE, fs_store)
    server.register(FS_STORE_ENCODED, fs_store_encoded)
    server.register(FS_LOAD, fs_load)
    server.register(FS_LOAD_ENCODED, fs_load_encoded)
    server.register(FS_INVALIDATE, fs_invalidate)
    server.register(FS_INVALIDATE_AREA, fs_invalidate_area)


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
