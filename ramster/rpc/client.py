"""RpcClient: a small pool of pipelined connections to one peer, per-call timeouts, and jittered
exponential backoff between failed connects (calls fail fast with PeerLost meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from dataclasses import dataclass
from typing import Final

from ramster.errors import AuthError, PeerLost, PeerTimeout, RpcError
from ramster.rpc.auth import KeyKind, Secret
from ramster.rpc.codes import error_from_wire
from ramster.rpc.config import RpcConfig
from ramster.rpc.connection import ClientConnection
from ramster.rpc.const import DROP_PAGES, GET_PAGES, PING, PUT_PAGES
from ramster.rpc.pages import Keys, PageBatch, flags_from_wire
from ramster.rpc.session import Identity, Role
from ramster.rpc.tls import client_context
from ramster.telemetry.ratelimit import LogLimiter

log = logging.getLogger("ramster.rpc")
_limited = LogLimiter(log)


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()
"""Use the configured call timeout."""


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Counters of one client since it was made."""

    connections: int
    connects: int
    connect_failures: int
    calls: int
    in_flight: int
    timeouts: int
    late_replies: int
    integrity_failures: int


class RpcClient:
    """Calls one peer; safe to share between tasks; reconnects on the next call after a loss."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: Secret,
        config: RpcConfig | None = None,
        *,
        identity: Identity | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config if config is not None else RpcConfig()
        self.identity = identity if identity is not None else Identity.client()
        """Who this client says it is (a program by default; nodes name themselves)."""
        if self.identity.role is Role.NODE and secret.kind is not KeyKind.CLUSTER:
            raise ValueError("a node authenticates with the cluster secret, not a client secret")
        self._secret = secret
        self._peer: Identity | None = None
        self._ssl = client_context(self.config)
        self._conns: list[ClientConnection] = []
        self._connect_lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        self._connects = 0
        self._connect_failures = 0
        self._calls = 0
        self._timeouts = 0
        self._late_from_closed = 0
        self._integrity_from_closed = 0

    @property
    def address(self) -> str:
        """'host:port' of the peer."""
        return f"{self.host}:{self.port}"

    @property
    def peer_identity(self) -> Identity | None:
        """Who the peer proved to be in the latest handshake (None before the first one)."""
        return self._peer

    # -- calls ------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: list[object],
        *,
        timeout: float | _Default | None = DEFAULT,  # noqa: ASYNC109 - the per-call deadline
    ) -> object:
        """Call method and return its result; raises the peer's error as its RpcError class.

        timeout bounds the whole call (waiting for a slot, connecting, the answer) and turns
        into PeerTimeout; by default it is config.call_timeout.
        """
        result, _ = await self.call_answered(method, params, timeout=timeout)
        return result

    async def call_answered(
        self,
        method: str,
        params: list[object],
        *,
        timeout: float | _Default | None = DEFAULT,  # noqa: ASYNC109 - the per-call deadline
    ) -> tuple[object, Identity | None]:
        """`call`, and who answered it: the identity the answering connection's handshake
        proved (a peer that restarted answers on a new connection as its new incarnation)."""
        limit = self.config.call_timeout if isinstance(timeout, _Default) else timeout
        if self._closed:
            raise PeerLost("the client is closed")
        self._calls += 1
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        try:
            conn = self._open_connection()
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connection()
            response = await conn.call(method, params, deadline)
        except TimeoutError as exc:
            self._timeouts += 1
            if isinstance(exc, RpcError):
                raise
            raise PeerTimeout(f"{method} to {self.address}: no answer within {limit} s") from exc
        if response.error is not None:
            raise error_from_wire(response.error)
        return response.result, conn.remote

    def notify(self, method: str, params: list[object]) -> None:
        """Send a one-way message on an open connection; PeerLost when there is none."""
        for conn in self._conns:
            if conn.is_open:
                conn.notify(method, params)
                return
        raise PeerLost(f"no open connection to {self.address}")

    async def ping(self) -> None:
        """One round trip."""
        await self.call(PING, [])

    async def put_pages(self, batch: PageBatch) -> list[bool]:
        """Ask the peer to keep these pages; True for each page it kept."""
        result = await self.call(PUT_PAGES, batch.to_wire())
        return flags_from_wire(result, len(batch))

    async def get_pages(self, keys: Keys) -> PageBatch:
        """The pages the peer holds among keys (missing ones are left out)."""
        result = await self.call(GET_PAGES, keys.to_wire())
        return PageBatch.from_wire(result)

    async def drop_pages(self, keys: Keys) -> list[bool]:
        """Ask the peer to forget these pages; True where it held one."""
        result = await self.call(DROP_PAGES, keys.to_wire())
        return flags_from_wire(result, len(keys))

    # -- connections ------------------------------------------------------------------------

    def _open_connection(self) -> ClientConnection | None:
        """The least loaded open connection, unless the pool should grow (or has none)."""
        conns = self._conns
        if not conns:
            return None
        if len(conns) == 1 and self.config.pool_size == 1:
            conn = conns[0]
            return conn if conn.is_open else None
        best = _least_loaded(conns)
        if best is not None and (
            best.in_flight < self.config.max_in_flight or len(conns) >= self.config.pool_size
        ):
            return best
        return None

    async def _connection(self) -> ClientConnection:
        async with self._connect_lock:
            for gone in (c for c in self._conns if not c.is_open):
                self._late_from_closed += gone.late_replies
                self._integrity_from_closed += gone.integrity_failures
            self._conns = conns = [c for c in self._conns if c.is_open]
            best = _least_loaded(conns)
            if best is not None and (
                best.in_flight < self.config.max_in_flight or len(conns) >= self.config.pool_size
            ):
                return best
            try:
                conn = await self._connect()
            except RpcError:
                if best is not None:
                    return best
                raise
            self._conns.append(conn)
            return conn

    async def _connect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        wait = self._retry_at - loop.time()
        if wait > 0:
            raise PeerLost(f"{self.address} is unreachable; next attempt in {wait:.2f} s")
        config = self.config
        conn: ClientConnection | None = None
        try:
            async with asyncio.timeout(config.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: ClientConnection(config, self._secret, self.identity),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                )
                await conn.wait_ready()
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._connect_failed()
            _limited.warning(
                ("connect", self.address), "connecting to %s failed: %r", self.address, exc
            )
            if isinstance(exc, RpcError):
                raise
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(f"connecting to {self.address} timed out") from exc
            if isinstance(exc, ssl.SSLError):
                raise AuthError(f"TLS with {self.address} failed: {exc}") from exc
            if isinstance(exc, OSError):
                raise PeerLost(f"cannot connect to {self.address}: {exc}") from exc
            raise
        self._failures = 0
        self._connects += 1
        self._peer = conn.remote
        return conn

    def _connect_failed(self) -> None:
        self._connect_failures += 1
        self._failures += 1
        config = self.config
        ceiling = min(config.reconnect_max, config.reconnect_min * 2 ** min(self._failures, 30))
        # Full jitter: peers that lost the same node do not all come back in step.
        delay = random.uniform(config.reconnect_min, ceiling)
        self._retry_at = asyncio.get_running_loop().time() + delay

    async def close(self) -> None:
        """Close every connection; pending calls fail with PeerLost. Idempotent."""
        self._closed = True
        conns, self._conns = self._conns, []
        for conn in conns:
            self._late_from_closed += conn.late_replies
            self._integrity_from_closed += conn.integrity_failures
            conn.close()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters."""
        return ClientStatistics(
            connections=sum(1 for c in self._conns if c.is_open),
            connects=self._connects,
            connect_failures=self._connect_failures,
            calls=self._calls,
            in_flight=sum(c.in_flight for c in self._conns),
            timeouts=self._timeouts,
            late_replies=self._late_from_closed + sum(c.late_replies for c in self._conns),
            integrity_failures=self._integrity_from_closed
            + sum(c.integrity_failures for c in self._conns),
        )


def _least_loaded(conns: list[ClientConnection]) -> ClientConnection | None:
    best: ClientConnection | None = None
    for conn in conns:
        if conn.is_open and (best is None or conn.in_flight < best.in_flight):
            best = conn
    return best
