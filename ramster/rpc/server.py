"""RpcServer: handshake, a handler registry with the roles allowed to call each method, Busy past
the in-flight limit, idle and connection limits (unauthenticated connections count apart).
`start()` returns when listening; `close()` is idempotent and drains, then cancels.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from ramster.errors import (
    AuthError,
    Busy,
    Forbidden,
    IntegrityError,
    NoSuchMethod,
    ProtocolError,
    RpcError,
)
from ramster.rpc.admission import Admission, Limits
from ramster.rpc.auth import Secret, ServerHandshake
from ramster.rpc.codes import error_to_wire
from ramster.rpc.config import RpcConfig
from ramster.rpc.connection import Endpoint, peer_host, warn_limited
from ramster.rpc.const import (
    AUTH,
    CHALLENGE,
    DROP_PAGES,
    GET_PAGES,
    HELLO,
    PING,
    PUT_PAGES,
    READY,
    REFUSED,
)
from ramster.rpc.frames import Message, Notification, Request, WireError
from ramster.rpc.methods import (
    Method,
    PageService,
    ServerStatistics,
    no_params,
    plain_params,
    wire_result,
)
from ramster.rpc.pages import Keys, PageBatch
from ramster.rpc.session import (
    ANYONE,
    NODES,
    Caller,
    Identity,
    Role,
    reset_caller,
    set_caller,
)
from ramster.rpc.tls import server_context
from ramster.telemetry.latency import Histogram

__all__ = ["PageService", "RpcServer", "ServerStatistics", "plain_params"]

log = logging.getLogger("ramster.rpc")

P = TypeVar("P")

Handler = Callable[[P], object] | Callable[[P], Awaitable[object]]


class ServerConnection(Endpoint):
    """The serving side of one connection."""

    def __init__(self, server: RpcServer) -> None:
        super().__init__(server.config)
        self._server = server
        self._handshake = ServerHandshake(
            server.secret,
            server.config.cluster,
            server.identity,
            client_secret=server.client_secret,
            encrypt=server.config.encrypt,
        )
        self._open = False
        self.caller: Caller | None = None
        """The authenticated peer, once its handshake is done."""
        self.source = "?"
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: collections.deque[Message] = collections.deque()
        self.opened_at = self._loop.time()
        self.last_message_at = self.opened_at

    @property
    def in_flight(self) -> int:
        """Async handlers running for this connection."""
        return len(self._tasks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.source = peer_host(transport)
        if not self._server._admit(self):
            self._send(self._encoder.notification(REFUSED, [Busy.code, "too many connections"]))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server._forget(self)
        for task in self._tasks:
            task.cancel()

    def _deliver(self, messages: list[Message]) -> None:
        self._backlog.extend(messages)
        self._serve_backlog()

    def _serve_backlog(self) -> None:
        # While answers cannot be written, calls already read wait here (at most one read's
        # worth: reading is paused too), so one peer cannot pile up unbounded answers.
        backlog = self._backlog
        while backlog and not self.closing and not self._write_paused:
            self._on_message(backlog.popleft())

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop reading its calls until it does.
        super().pause_writing()
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._loop.call_soon(self._after_resume)

    def _after_resume(self) -> None:
        self._serve_backlog()
        if self._transport is not None and not self.closing and not self._write_paused:
            self._transport.resume_reading()

    def _protocol_violation(self, exc: ProtocolError) -> None:
        if not self._open:
            # Before the handshake anything malformed is a failed handshake: say so, count it.
            self._refuse(exc)
            return
        self._server._stats["protocol_errors"] += 1
        super()._protocol_violation(exc)

    def _integrity_failure(self, exc: IntegrityError) -> None:
        self._server._stats["integrity_failures"] += 1
        super()._integrity_failure(exc)

    def _refuse(self, exc: RpcError) -> None:
        self._server._handshake_failed(self.peer, str(exc))
        # The reasons name no secret material: wrong cluster, version, proof or order.
        with contextlib.suppress(RpcError):
            self._notify(REFUSED, [type(exc).code, str(exc)[:256]])
        self.close()

    def check_timers(self, now: float) -> None:
        """Close the connection if its handshake or its silence lasted too long."""
        config = self._config
        if self._closing:
            return
        if not self._open:
            if now - self.opened_at > config.handshake_timeout:
                self._server._handshake_failed(self.peer, "handshake timed out")
                self.abort()
            return
        idle = config.idle_timeout
        if idle is not None and not self._tasks and now - self.last_message_at > idle:
            self._server._stats["idle_closed"] += 1
            log.info("closing idle connection from %s", self.peer)
            self.close()

    async def wait_tasks(self) -> None:
        """Wait for the running handlers of this connection."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def cancel_tasks(self) -> None:
        """Cancel the running handlers of this connection."""
        for task in self._tasks:
            task.cancel()

    def _on_message(self, message: Message) -> None:
        self.last_message_at = self._loop.time()
        if not self._open:
            self._handshake_step(message)
            return
        if type(message) is Request:
            self._dispatch(message)
        elif type(message) is Notification:
            self._on_notification(message)
        else:
            self._protocol_violation(ProtocolError("a client sent a response"))

    def _handshake_step(self, message: Message) -> None:
        hs = self._handshake
        try:
            if type(message) is Notification and message.method == HELLO:
                self._notify(CHALLENGE, hs.hello(message.params))
            elif type(message) is Notification and message.method == AUTH:
                ready = hs.auth(message.params)
                keys = hs.keys
                assert keys is not None
                self._start_session(keys)  # READY, and everything after it, is sealed
                if not self._server._authenticated(self, keys.encrypted):
                    self._notify(REFUSED, [Busy.code, "too many connections"])
                    self.close()
                    return
                self._open = True
                self.caller = Caller(keys.peer, self.peer)
                self._notify(READY, ready)
            else:
                raise AuthError("a message before the handshake")
        except RpcError as exc:
            self._refuse(exc)

    def _on_notification(self, message: Notification) -> None:
        method = self._server._methods.get(message.method)
        if method is None:
            log.debug("ignoring notification %r from %s", message.method, self.peer)
            return
        caller = self.caller
        assert caller is not None
        if caller.identity.role not in method.roles:
            self._server._forbidden(caller, message.method)
            return
        try:
            params = method.decode(message.params)
        except ProtocolError as exc:
            log.warning("bad %r notification from %s: %s", message.method, self.peer, exc)
            return
        token = set_caller(caller)
        try:
            if method.is_async:
                if len(self._tasks) >= self._config.max_in_flight:
                    self._server._stats["busy_replies"] += 1
                    log.warning("dropping %r notification from %s: busy", message.method, self.peer)
                    return
                # The task copies the context, caller included.
                task = self._loop.create_task(self._run_notification(method, params))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            try:
                method.handler(params)
            except Exception:
                log.exception("notification handler %r failed", message.method)
        finally:
            reset_caller(token)

    async def _run_notification(self, method: Method, params: object) -> None:
        try:
            await cast(Awaitable[object], method.handler(params))
        except Exception:
            log.exception("notification handler failed for %s", self.peer)

    def _dispatch(self, request: Request) -> None:
        server = self._server
        stats = server._stats
        stats["calls"] += 1
        method = server._methods.get(request.method)
        if method is None:
            self._reply_error(request.msgid, NoSuchMethod(f"no method {request.method!r}"))
            return
        caller = self.caller
        assert caller is not None
        if caller.identity.role not in method.roles:
            role = caller.identity.role.value
            self._reply_error(request.msgid, Forbidden(f"{request.method} is not for a {role}"))
            return
        try:
            params = method.decode(request.params)
        except ProtocolError as exc:
            self._reply_error(request.msgid, exc)
            return
        token = set_caller(caller)
        try:
            if method.is_async:
                if len(self._tasks) >= self._config.max_in_flight:
                    stats["busy_replies"] += 1
                    self._reply_error(request.msgid, Busy("too many calls in flight"))
                    return
                # The task copies the context, caller included.
                task = self._loop.create_task(self._run(request.msgid, method, params))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            started = time.perf_counter()
            try:
                result = method.handler(params)
            except Exception as exc:
                method.latency.observe(time.perf_counter() - started)
                self._reply_error(request.msgid, exc)
                return
            method.latency.observe(time.perf_counter() - started)
        finally:
            reset_caller(token)
        self._reply(request.msgid, result)

    async def _run(self, msgid: int, method: Method, params: object) -> None:
        started = time.perf_counter()
        try:
            result = await cast(Awaitable[object], method.handler(params))
        except Exception as exc:
            method.latency.observe(time.perf_counter() - started)
            self._reply_error(msgid, exc)
            return
        method.latency.observe(time.perf_counter() - started)
        self._reply(msgid, result)

    def _reply(self, msgid: int, result: object) -> None:
        if self._closing:
            return
        try:
            buffers = self._encoder.response(msgid, None, wire_result(result))
        except ProtocolError as exc:
            self._reply_error(msgid, exc)
            return
        self._send(buffers)

    def _reply_error(self, msgid: int, exc: Exception) -> None:
        if self._closing:
            return
        self._server._stats["error_replies"] += 1
        if isinstance(exc, Forbidden) and self.caller is not None:
            self._server._forbidden(self.caller, str(exc))
        if not isinstance(exc, RpcError):
            log.error("handler failed for %s", self.peer, exc_info=exc)
        error: WireError = error_to_wire(exc)
        self._send(self._encoder.response(msgid, error, None))


class RpcServer:
    """Serves registered methods to authenticated peers of one cluster."""

    def __init__(
        self,
        secret: Secret,
        config: RpcConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        identity: Identity | None = None,
        client_secret: Secret | None = None,
    ) -> None:
        self.secret = secret
        self.client_secret = client_secret
        """A second secret that authenticates programs in the client role only."""
        self.identity = identity if identity is not None else Identity(Role.NODE)
        """Who this server says it is in every handshake (a node id, or none)."""
        if self.identity.role is not Role.NODE:
            raise ValueError("a server is a node")
        self.config = config if config is not None else RpcConfig()
        self._host = host
        self._requested_port = port
        self._methods: dict[str, Method] = {}
        self._connections: set[ServerConnection] = set()
        config = self.config
        self._admission: Admission[ServerConnection] = Admission(
            Limits(
                config.max_connections,
                config.max_unauthenticated,
                config.max_unauthenticated_per_source,
            )
        )
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._port: int | None = None
        self._stats = dict.fromkeys(
            (
                "accepted",
                "refused_connections",
                "handshakes",
                "handshake_failures",
                "protocol_errors",
                "integrity_failures",
                "calls",
                "forbidden",
                "busy_replies",
                "error_replies",
                "idle_closed",
                "encrypted_sessions",
            ),
            0,
        )
        self.register(PING, lambda _: None, decode=no_params, roles=ANYONE)

    # -- registry ---------------------------------------------------------------------------

    def register(
        self,
        method: str,
        handler: Callable[[P], object],
        *,
        decode: Callable[[list[object]], P] | None = None,
        roles: frozenset[Role] = NODES,
    ) -> None:
        """Serve method to `roles` (others get Forbidden): decode checks params (ProtocolError
        if off); handler may be async and learns who calls from `rpc.session.caller()`."""
        if method in self._methods:
            raise ValueError(f"method {method!r} is already registered")
        check = decode if decode is not None else plain_params
        self._methods[method] = Method(
            decode=check,
            handler=cast(Callable[[object], object], handler),
            is_async=inspect.iscoroutinefunction(handler),
            roles=roles,
        )

    def register_pages(self, service: PageService, roles: frozenset[Role] = ANYONE) -> None:
        """Serve pages.put, pages.get and pages.drop from service."""
        self.register(PUT_PAGES, service.put_pages, decode=PageBatch.from_wire, roles=roles)
        self.register(GET_PAGES, service.get_pages, decode=Keys.from_wire, roles=roles)
        self.register(DROP_PAGES, service.drop_pages, decode=Keys.from_wire, roles=roles)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (known once start() returned)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    async def start(self) -> None:
        """Listen; return once connections are accepted."""
        if self._closed:
            raise RuntimeError("a closed server cannot be started again")
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConnection(self),
            self._host,
            self._requested_port,
            ssl=server_context(self.config),
            ssl_handshake_timeout=self.config.handshake_timeout if self.config.tls else None,
            reuse_address=True,
            backlog=min(self.config.max_connections, 4096),
        )
        sockets = self._server.sockets
        self._port = int(sockets[0].getsockname()[1])
        self._sweeper = loop.create_task(self._sweep(), name=f"rpc-sweeper:{self._port}")
        log.info("rpc server listening on %s:%d", self._host, self._port)

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting, let running handlers finish for up to grace seconds, then cancel."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
        connections = list(self._connections)
        pending = [c.wait_tasks() for c in connections if c.in_flight]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending)
        for conn in connections:
            conn.cancel_tasks()
            conn.close()
        for conn in connections:
            await conn.wait_tasks()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._server.wait_closed()

    async def __aenter__(self) -> RpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters."""
        admission = self._admission
        return ServerStatistics(
            connections=admission.authenticated,
            unauthenticated=admission.unauthenticated,
            preauth_evicted=admission.evicted,
            in_flight=sum(c.in_flight for c in self._connections),
            **self._stats,
        )

    def method_latencies(self) -> dict[str, Histogram]:
        """Per method, how long handling calls took (a live view: read, do not change)."""
        return {name: m.latency for name, m in self._methods.items()}

    # -- called by connections --------------------------------------------------------------

    def _admit(self, conn: ServerConnection) -> bool:
        admitted, evicted = (False, None)
        if not self._closed:
            admitted, evicted = self._admission.arrive(conn, conn.source)
        if evicted is not None:
            evicted.abort()
            warn_limited("evicted", "dropped a handshake from %s: too many at once", evicted.peer)
        if not admitted:
            self._stats["refused_connections"] += 1
            warn_limited("refused", "refusing %s: too many handshakes from that address", conn.peer)
            return False
        self._stats["accepted"] += 1
        self._connections.add(conn)
        return True

    def _authenticated(self, conn: ServerConnection, encrypted: bool) -> bool:
        if self._closed or not self._admission.authenticate(conn):
            self._stats["refused_connections"] += 1
            log.warning("refusing %s: too many connections", conn.peer)
            return False
        self._stats["handshakes"] += 1
        self._stats["encrypted_sessions"] += int(encrypted)
        return True

    def _forget(self, conn: ServerConnection) -> None:
        self._connections.discard(conn)
        self._admission.leave(conn)

    def _handshake_failed(self, peer: str, reason: str) -> None:
        self._stats["handshake_failures"] += 1
        warn_limited("handshake", "handshake with %s failed: %s", peer, reason)

    def _forbidden(self, caller: Caller, what: str) -> None:
        self._stats["forbidden"] += 1
        warn_limited("forbidden", "refused a call of %s at %s: %s", caller.identity,
                     caller.address, what)  # fmt: skip

    async def _sweep(self) -> None:
        config = self.config
        limits = [config.handshake_timeout]
        if config.idle_timeout is not None:
            limits.append(config.idle_timeout)
        period = min(max(min(limits) / 4, 0.01), 1.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._connections):
                conn.check_timers(now)
