"""Peer RPC: length-prefixed msgpack-RPC over TCP (optionally TLS), an HMAC handshake over the
cluster secret, pipelined calls, page batches, and backpressure everywhere.

Only this package imports msgpack.
"""

from ramster.errors import (
    AuthError,
    Busy,
    CapacityError,
    NoSuchMethod,
    PeerLost,
    PeerTimeout,
    ProtocolError,
    RemoteError,
    RpcError,
    VersionMismatch,
)
from ramster.rpc.auth import SECRET_ENV, Secret, load_secret
from ramster.rpc.client import DEFAULT, ClientStatistics, RpcClient
from ramster.rpc.codes import ERROR_CLASSES
from ramster.rpc.config import RpcConfig
from ramster.rpc.const import DROP_PAGES, GET_PAGES, PING, PROTOCOL_VERSION, PUT_PAGES
from ramster.rpc.frames import Chunks, FrameDecoder, FrameEncoder, Notification, Request, Response
from ramster.rpc.loop import new_event_loop, run
from ramster.rpc.pages import Keys, Page, PageBatch, flags_from_wire
from ramster.rpc.server import PageService, RpcServer, ServerStatistics, plain_params

__all__ = [
    "DEFAULT",
    "DROP_PAGES",
    "ERROR_CLASSES",
    "GET_PAGES",
    "PING",
    "PROTOCOL_VERSION",
    "PUT_PAGES",
    "SECRET_ENV",
    "AuthError",
    "Busy",
    "CapacityError",
    "Chunks",
    "ClientStatistics",
    "FrameDecoder",
    "FrameEncoder",
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
    "RpcClient",
    "RpcConfig",
    "RpcError",
    "RpcServer",
    "Secret",
    "ServerStatistics",
    "VersionMismatch",
    "flags_from_wire",
    "load_secret",
    "new_event_loop",
    "plain_params",
    "run",
]
