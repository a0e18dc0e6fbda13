"""Peer RPC: length-prefixed msgpack-RPC over TCP (optionally TLS), a handshake over the
cluster secret that names both ends and yields session keys, every frame after it sealed
(AES-256-GCM), per-method roles, pipelined calls, page batches, and backpressure everywhere.

Only this package imports msgpack.
"""

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
from ramster.rpc.auth import CLIENT_SECRET_ENV, SECRET_ENV, KeyKind, Secret, load_secret
from ramster.rpc.client import DEFAULT, ClientStatistics, RpcClient
from ramster.rpc.codes import ERROR_CLASSES
from ramster.rpc.config import RpcConfig
from ramster.rpc.const import DROP_PAGES, GET_PAGES, PING, PROTOCOL_VERSION, PUT_PAGES
from ramster.rpc.frames import Chunks, FrameDecoder, FrameEncoder, Notification, Request, Response
from ramster.rpc.loop import new_event_loop, run
from ramster.rpc.pages import Keys, Page, PageBatch, flags_from_wire
from ramster.rpc.server import PageService, RpcServer, ServerStatistics, plain_params
from ramster.rpc.session import ANYONE, NODES, Caller, Identity, Role, caller

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
