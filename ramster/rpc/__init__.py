"""Peer RPC: length-prefixed msgpack-RPC over TCP (optionally TLS), a handshake over the
cluster secret that names both ends and yields session keys, every frame after it sealed
(AES-256-GCM), per-method roles, pipelined calls, page batches, and backpressure everywhere.

Only this package imports msgpack.
"""

import importlib
from typing import TYPE_CHECKING

from ramster.errors import (
    AuthError,
    Busy,
    CapacityError,
    Forbidden,
    IntegrityError,
    NoSuchMethod,
    PeerLost,
    PeerTimeout,
    ProtocolError,
    RemoteError,
    RpcError,
    VersionMismatch,
)

if TYPE_CHECKING:
    from ramster.rpc.auth import CLIENT_SECRET_ENV, SECRET_ENV, KeyKind, Secret, load_secret
    from ramster.rpc.client import DEFAULT, ClientStatistics, RpcClient
    from ramster.rpc.codes import ERROR_CLASSES
    from ramster.rpc.config import RpcConfig
    from ramster.rpc.const import DROP_PAGES, GET_PAGES, PING, PROTOCOL_VERSION, PUT_PAGES
    from ramster.rpc.frames import (
        Chunks,
        FrameDecoder,
        FrameEncoder,
        Notification,
        Request,
        Response,
    )
    from ramster.rpc.loop import new_event_loop, run
    from ramster.rpc.pages import Keys, Page, PageBatch, flags_from_wire
    from ramster.rpc.server import PageService, RpcServer, ServerStatistics, plain_params
    from ramster.rpc.session import ANYONE, NODES, Caller, Identity, Role, caller

# The rest of the surface is imported on first use (PEP 562): `ramster nbd` needs only the
# loop, and cryptography and msgpack cost it about 10 MiB of idle RSS.
_WHERE = {
    "CLIENT_SECRET_ENV": "auth",
    "SECRET_ENV": "auth",
    "KeyKind": "auth",
    "Secret": "auth",
    "load_secret": "auth",
    "DEFAULT": "client",
    "ClientStatistics": "client",
    "RpcClient": "client",
    "ERROR_CLASSES": "codes",
    "RpcConfig": "config",
    "DROP_PAGES": "const",
    "GET_PAGES": "const",
    "PING": "const",
    "PROTOCOL_VERSION": "const",
    "PUT_PAGES": "const",
    "Chunks": "frames",
    "FrameDecoder": "frames",
    "FrameEncoder": "frames",
    "Notification": "frames",
    "Request": "frames",
    "Response": "frames",
    "new_event_loop": "loop",
    "run": "loop",
    "Keys": "pages",
    "Page": "pages",
    "PageBatch": "pages",
    "flags_from_wire": "pages",
    "PageService": "server",
    "RpcServer": "server",
    "ServerStatistics": "server",
    "plain_params": "server",
    "ANYONE": "session",
    "NODES": "session",
    "Caller": "session",
    "Identity": "session",
    "Role": "session",
    "caller": "session",
}


def __getattr__(name: str) -> object:
    """A name of the surface, imported from its module on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ANYONE",
    "CLIENT_SECRET_ENV",
    "DEFAULT",
    "DROP_PAGES",
    "ERROR_CLASSES",
    "GET_PAGES",
    "NODES",
    "PING",
    "PROTOCOL_VERSION",
    "PUT_PAGES",
    "SECRET_ENV",
    "AuthError",
    "Busy",
    "Caller",
    "CapacityError",
    "Chunks",
    "ClientStatistics",
    "Forbidden",
    "FrameDecoder",
    "FrameEncoder",
    "Identity",
    "IntegrityError",
    "KeyKind",
    "Keys",
    "NoSuchMethod",
    "Notification",
    "Page",
    "PageBatch",
    "PageService",
    "PeerLost",
    "PeerTimeout",
    "ProtocolError",
    "RemoteError",
    "Request",
    "Response",
    "Role",
    "RpcClient",
    "RpcConfig",
    "RpcError",
    "RpcServer",
    "Secret",
    "ServerStatistics",
    "VersionMismatch",
    "caller",
    "flags_from_wire",
    "load_secret",
    "new_event_loop",
    "plain_params",
    "run",
]
