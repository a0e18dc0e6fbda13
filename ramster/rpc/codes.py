"""Wire error codes <-> error classes: a peer's error is raised here as the same class."""

from __future__ import annotations

from ramster.errors import (
    AuthError,
    Busy,
    CapacityError,
    DuplicateNode,
    ExportFenced,
    ExportPending,
    Forbidden,
    IntegrityError,
    NoSuchMethod,
    PagesReclaimed,
    PeerLost,
    PeerTimeout,
    ProtocolError,
    RemoteError,
    RpcError,
    VersionMismatch,
)
from ramster.rpc.const import MAX_ERROR_MESSAGE_CHARS
from ramster.rpc.frames import WireError

_CLASSES: tuple[type[RpcError], ...] = (
    RpcError,
    ProtocolError,
    VersionMismatch,
    AuthError,
    PeerTimeout,
    PeerLost,
    Busy,
    RemoteError,
    NoSuchMethod,
    CapacityError,
    PagesReclaimed,
    DuplicateNode,
    ExportFenced,
    ExportPending,
    Forbidden,
    IntegrityError,
)
ERROR_CLASSES: dict[int, type[RpcError]] = {cls.code: cls for cls in _CLASSES}
"""Every code a peer may send; an unknown code is raised as RemoteError."""

assert len(ERROR_CLASSES) == len(_CLASSES), "two error classes share a wire code"


def error_from_wire(error: WireError) -> RpcError:
    """The exception a client raises for a peer's error reply."""
    cls = ERROR_CLASSES.get(error.code, RemoteError)
    exc = cls(error.message)
    if cls is RemoteError and error.code != RemoteError.code:
        exc = RemoteError(f"[code {error.code}] {error.message}")
    return exc


def error_to_wire(exc: BaseException) -> WireError:
    """The error reply for an exception a handler raised; other exceptions are not described."""
    if isinstance(exc, RpcError) and type(exc).code in ERROR_CLASSES:
        return WireError(type(exc).code, str(exc)[:MAX_ERROR_MESSAGE_CHARS])
    return WireError(RemoteError.code, f"internal error in handler ({type(exc).__name__})")
