"""The server's method registry entries, its statistics, and the page service interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ramster.errors import ProtocolError
from ramster.rpc.frames import check_plain
from ramster.rpc.pages import Keys, PageBatch
from ramster.rpc.session import Role
from ramster.telemetry.latency import Histogram


def plain_params(params: list[object]) -> list[object]:
    """The default params check: only msgpack's plain types (no extension, no timestamp)."""
    check_plain(params)
    return params


def no_params(params: list[object]) -> None:
    """The params check of a method that takes none."""
    if params:
        raise ProtocolError("this method takes no params")


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method."""

    decode: Callable[[list[object]], object]
    handler: Callable[[object], object]
    is_async: bool
    roles: frozenset[Role]
    """Who may call it; anyone else is answered Forbidden."""
    latency: Histogram = field(default_factory=Histogram)
    """Seconds from decoded params to result, successful or not."""


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """Counters of one server since start."""

    connections: int
    """Authenticated connections open now."""
    unauthenticated: int
    """Connections open now that have not finished their handshake."""
    accepted: int
    refused_connections: int
    preauth_evicted: int
    handshakes: int
    handshake_failures: int
    protocol_errors: int
    integrity_failures: int
    """Frames that failed to open (modified, reordered, replayed, injected): connection closed."""
    calls: int
    forbidden: int
    """Calls refused because the caller's role or identity does not allow them."""
    busy_replies: int
    error_replies: int
    idle_closed: int
    in_flight: int
    encrypted_sessions: int


class PageService(Protocol):
    """What a holder of pages offers to peers; every method handles a whole batch."""

    def put_pages(self, batch: PageBatch) -> list[bool]:
        """Keep these pages (True) or refuse each one (False)."""

    def get_pages(self, keys: Keys) -> PageBatch:
        """The pages held among keys; missing ones are left out."""

    def drop_pages(self, keys: Keys) -> list[bool]:
        """Forget these pages; True where one was held."""


def wire_result(result: object) -> object:
    """A handler's result as msgpack can carry it."""
    if isinstance(result, PageBatch | Keys):
        return result.to_wire()
    return result
