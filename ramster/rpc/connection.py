"""One RPC connection as an asyncio BufferedProtocol: the kernel reads straight into the frame
decoder's buffers, the protocol itself is the only reader, and writes go out as whole frames.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, cast

from ramster.errors import (
    AuthError,
    IntegrityError,
    PeerLost,
    PeerTimeout,
    ProtocolError,
    RpcError,
)
from ramster.rpc.auth import ClientHandshake, Secret, SessionKeys
from ramster.rpc.codes import error_from_wire
from ramster.rpc.config import RpcConfig
from ramster.rpc.const import (
    AUTH,
    CHALLENGE,
    HELLO,
    MAX_MSGID,
    READY,
    REFUSED,
    SILENT_ABORT,
    WRITE_HIGH_WATER,
)
from ramster.rpc.frames import (
    FrameDecoder,
    FrameEncoder,
    Message,
    Notification,
    Response,
    WireError,
)
from ramster.rpc.session import Identity
from ramster.types import Buffer

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("ramster.rpc")

WRITELINES_MAX = 8
"""Above this many buffers a frame is joined before writing (see Endpoint._send)."""

_DISCARD = memoryview(bytearray(4096))
"""Where bytes go after a connection failed and before the transport stops reading."""


class _Throttle:
    """At most BURST warnings per key per second, then a count of those held back: a flood of
    junk connections must not become a flood of log lines."""

    BURST = 10

    def __init__(self) -> None:
        self._window: dict[str, tuple[float, int]] = {}
        self._held: collections.Counter[str] = collections.Counter()

    def warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        start, count = self._window.get(key, (-1e9, 0))
        if now - start >= 1.0:
            start, count = now, 0
            held = self._held.pop(key, 0)
            if held:
                log.warning("%d more warnings like this were held back: " + message, held, *args)
        if count >= self.BURST:
            self._held[key] += 1
            self._window[key] = (start, count)
            return
        self._window[key] = (start, count + 1)
        log.warning(message, *args)


warn_limited = _Throttle().warn
"""log.warning, throttled per key (for what unauthenticated peers can provoke)."""


def peer_host(transport: asyncio.BaseTransport) -> str:
    """The other end's address without its port (what per-source limits count)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def peer_name(transport: asyncio.BaseTransport) -> str:
    """'host:port' of the other end, for logs and errors."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class Endpoint(asyncio.BufferedProtocol):
    """What client and server connections share: framing, flow control, close and abort."""

    def __init__(self, config: RpcConfig) -> None:
        self._config = config
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(config.max_message_bytes, preauth=True)
        self._encoder = FrameEncoder(config.max_message_bytes)
        self._transport: asyncio.Transport | None = None
        self._closing = False
        self._lost = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.peer = "?"

    @property
    def is_open(self) -> bool:
        """True while the connection may carry new frames."""
        return self._transport is not None and not self._closing

    @property
    def closing(self) -> bool:
        """True once close() or abort() was called or the connection was lost."""
        return self._closing

    @property
    def decoder_bytes(self) -> int:
        """Bytes of buffers the decoder holds (bounded by the scratch plus one frame)."""
        return self._decoder.allocated_bytes

    # -- asyncio.BufferedProtocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.peer = peer_name(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Not TCP (a unix socket in a test) or already closed: nothing to tune.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Room for a few batches in the transport before writers wait (its default is 64 KiB,
        # less than one 64-page batch): calls in flight then keep both ends busy.
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._closing:
            return _DISCARD
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        decoder = self._decoder
        try:
            messages = decoder.buffer_updated(nbytes)
            while messages:
                # Before the handshake is done the decoder hands out one message at a time:
                # the message may install the session keys the next frame is opened with.
                stepping = not decoder.authenticated
                self._deliver(messages)
                if not stepping or self._closing:
                    return
                messages = decoder.next_messages()
        except IntegrityError as exc:
            self._integrity_failure(exc)
        except ProtocolError as exc:
            self._protocol_violation(exc)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._lost = True
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(PeerLost(f"connection to {self.peer} lost"))

    # -- shared behaviour -------------------------------------------------------------------

    def _deliver(self, messages: list[Message]) -> None:
        for message in messages:
            if self._closing:
                return
            self._on_message(message)

    def _on_message(self, message: Message) -> None:
        raise NotImplementedError

    def _start_session(self, keys: SessionKeys) -> None:
        """Seal every frame sent from now on and open every frame read from now on."""
        self._encoder.sealer = keys.sealer
        self._decoder.authenticate(keys.opener)

    def _protocol_violation(self, exc: ProtocolError) -> None:
        warn_limited("protocol", "protocol error from %s: %s; closing", self.peer, exc)
        self.abort()

    def _integrity_failure(self, exc: IntegrityError) -> None:
        # Modified, reordered, replayed or injected: someone else is on this connection.
        warn_limited("integrity", "frame from %s failed its integrity check (%s); closing",
                     self.peer, exc)  # fmt: skip
        self.abort()

    def _send(self, buffers: Sequence[Buffer]) -> None:
        transport = self._transport
        if transport is None or self._closing:
            raise PeerLost(f"connection to {self.peer} is closed")
        if len(buffers) == 1:
            transport.write(buffers[0])
            encoder = self._encoder
            if encoder.lent:
                # Reusable only if the transport handed every byte to the kernel and so keeps
                # no reference to it; otherwise it stays the transport's.
                encoder.written(transport.get_write_buffer_size() == 0)
        elif len(buffers) <= WRITELINES_MAX:
            transport.writelines(buffers)
        else:
            # One copy beats one send() per page: transports write each buffer in turn.
            transport.write(b"".join(buffers))

    def _notify(self, method: str, params: list[object]) -> None:
        self._send(self._encoder.notification(method, params))

    async def _drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused:
            return
        if self._lost:
            raise PeerLost(f"connection to {self.peer} lost")
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Flush what is written, then close; a connection is never reused after this."""
        self._closing = True
        if self._transport is not None:
            if self._transport.get_write_buffer_size():
                # A peer that does not read could keep a graceful close waiting forever.
                self._transport.abort()
            else:
                self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, discarding unsent data."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def abort_hard(self) -> None:
        """Drop the connection with a reset: the kernel discards what it has not delivered
        yet instead of sending it on (a plain close still flushes the socket's buffer)."""
        if self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()


class ClientConnection(Endpoint):
    """The calling side: handshake, then pipelined calls matched by msgid."""

    def __init__(self, config: RpcConfig, secret: Secret, identity: Identity | None = None) -> None:
        super().__init__(config)
        self._handshake = ClientHandshake(secret, config.cluster, identity, encrypt=config.encrypt)
        self.remote: Identity | None = None
        """The server's identity, as its handshake proved it."""
        self.encrypted = False
        self.integrity_failures = 0
        self._ready: asyncio.Future[None] = self._loop.create_future()
        # A handshake abandoned by its caller (timeout) may still fail later: never unretrieved.
        self._ready.add_done_callback(_retrieve)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._deadlines: dict[int, float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._next_msgid = 0
        self._free_slots = config.max_in_flight
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ready_ok = False
        self.late_replies = 0
        self._sent_at: dict[int, float] = {}
        self._last_rx = 0.0
        self.silent_aborts = 0
        """Connections dropped because a call timed out with nothing heard since it was sent."""

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered."""
        return len(self._pending)

    @property
    def is_open(self) -> bool:
        return self._ready_ok and not self._closing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._notify(HELLO, self._handshake.hello())

    async def wait_ready(self) -> None:
        """Return once the handshake succeeded; raise its typed error otherwise."""
        await asyncio.shield(self._ready)

    def _fail_handshake(self, exc: RpcError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
        self.abort()

    def _on_message(self, message: Message) -> None:
        self._last_rx = self._loop.time()
        if type(message) is Response:
            if not self._ready.done():
                self._fail_handshake(ProtocolError("response before the handshake"))
                return
            future = self._pending.pop(message.msgid, None)
            if future is None:
                # The caller gave up (timeout, cancel); its reply is dropped, nothing else.
                self.late_replies += 1
            elif not future.done():
                future.set_result(message)
            return
        if type(message) is Notification:
            self._on_notification(message)
            return
        self._protocol_violation(ProtocolError("a server sent a request"))

    def _on_notification(self, message: Notification) -> None:
        method = message.method
        if self._ready.done():
            log.debug("ignoring notification %r from %s", method, self.peer)
            return
        try:
            if method == CHALLENGE:
                hs = self._handshake
                self._notify(AUTH, hs.challenge(message.params))
                assert hs.keys is not None
                self._start_session(hs.keys)  # READY must arrive sealed
            elif method == READY:
                self._handshake.ready(message.params)
                keys = self._handshake.keys
                assert keys is not None
                self.remote = keys.peer
                self.encrypted = keys.encrypted
                self._ready_ok = True
                self._ready.set_result(None)
            elif method == REFUSED:
                self._fail_handshake(_refusal(message.params))
            else:
                raise ProtocolError(f"unexpected {method!r} during the handshake")
        except RpcError as exc:
            self._fail_handshake(exc)

    def _protocol_violation(self, exc: ProtocolError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
        super()._protocol_violation(exc)

    def _integrity_failure(self, exc: IntegrityError) -> None:
        self.integrity_failures += 1
        if not self._ready.done():
            self._ready.set_exception(AuthError(f"{self.peer} broke the handshake: {exc}"))
        super()._integrity_failure(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        lost = PeerLost(f"connection to {self.peer} lost" + (f": {exc}" if exc else ""))
        if not self._ready.done():
            self._ready.set_exception(lost)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiters, self._slot_waiters = self._slot_waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)  # it wakes, finds the connection closed, raises

    async def call(self, method: str, params: list[object], deadline: float | None) -> Response:
        """Send one request and wait for its response until deadline (loop time; None: none).

        Past max_in_flight the call waits for a slot. Raises PeerTimeout at the deadline and
        PeerLost if the connection dies first.
        """
        if not self.is_open:
            raise PeerLost(f"connection to {self.peer} is closed")
        if self._free_slots > 0 and not self._slot_waiters:
            self._free_slots -= 1
        else:
            await self._wait_for_slot(method, deadline)
        try:
            msgid = self._next_msgid
            self._next_msgid = (msgid + 1) & MAX_MSGID
            buffers = self._encoder.request(msgid, method, params)
            future: asyncio.Future[Response] = self._loop.create_future()
            self._pending[msgid] = future
            if deadline is not None:
                self._deadlines[msgid] = deadline
                self._sent_at[msgid] = self._loop.time()
                if self._watchdog is None or deadline < self._watchdog.when():
                    self._arm_watchdog(deadline)
            try:
                self._send(buffers)
                if self._write_paused:
                    await self._drain_or_abort(method, deadline)
                return await future
            finally:
                # On cancel or timeout the msgid is forgotten; a late reply is then dropped.
                self._pending.pop(msgid, None)
                self._deadlines.pop(msgid, None)
                self._sent_at.pop(msgid, None)
        finally:
            self._release_slot()

    def _arm_watchdog(self, when: float) -> None:
        # One timer per connection, not one per call: calls with the usual timeout have
        # rising deadlines, so it is re-armed about once per call_timeout, not per call.
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(when, self._expire_overdue)

    def _expire_overdue(self) -> None:
        self._watchdog = None
        now = self._loop.time()
        deadlines = self._deadlines
        silent = False
        for msgid, deadline in list(deadlines.items()):
            if deadline <= now:
                del deadlines[msgid]
                sent = self._sent_at.pop(msgid, now)
                silent = silent or (sent >= self._last_rx and now - self._last_rx >= SILENT_ABORT)
                future = self._pending.get(msgid)
                if future is not None and not future.done():
                    future.set_exception(PeerTimeout(f"call to {self.peer}: no answer in time"))
        if silent and not self._closing:
            # Nothing at all came back since that call was sent: the path or the peer is gone.
            # Drop the connection and what it still holds, so that requests queued in it are
            # not delivered much later (a healed partition retransmits them; a resumed peer
            # would act on them long after the caller gave up).
            self.silent_aborts += 1
            self.abort_hard()
            return
        if deadlines and not self._closing:
            self._arm_watchdog(min(deadlines.values()))

    async def _wait_for_slot(self, method: str, deadline: float | None) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            # Whatever ends the wait (a timeout, a cancel), a slot handed over in the same
            # loop iteration is ours: give it back, or it is gone for good.
            if waiter.done() and not waiter.cancelled():
                self._release_slot()
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(f"{method} to {self.peer}: no free call slot in time") from exc
            raise
        if not self.is_open:
            self._release_slot()
            raise PeerLost(f"connection to {self.peer} is closed")

    def _release_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free_slots += 1

    async def _drain_or_abort(self, method: str, deadline: float | None) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await self._drain()
        except (asyncio.CancelledError, TimeoutError) as exc:
            # Our frame may be half in the socket: this connection is poisoned, never reused.
            self.abort()
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(f"{method} to {self.peer}: could not send in time") from exc
            raise

    def notify(self, method: str, params: list[object]) -> None:
        """Send a one-way message."""
        if not self.is_open:
            raise PeerLost(f"connection to {self.peer} is closed")
        self._notify(method, params)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _refusal(params: list[object]) -> RpcError:
    if len(params) == 2 and type(params[0]) is int and type(params[1]) is str:
        return error_from_wire(WireError(params[0], params[1]))
    return AuthError("the peer refused the handshake")
