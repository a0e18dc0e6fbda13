"""The asyncio shell around the NBD protocol: sockets, admission, flow control, ownership.

One NbdServer owns a TaskGroup; every accepted connection is one task in it. A connection reads
through an asyncio.Protocol (bytes go to the sans-IO Handshake, then to the RequestDecoder) and
answers what was read in batches, several at once (each a task of the connection's TaskGroup):
consecutive READs become one load_many, consecutive WRITEs (with the short TRIMs and
WRITE_ZEROES among them) one store_many. Reading
pauses while a connection has `max_inflight` requests or `max_queued_bytes` of payload read and
not answered, or while its replies are not being read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from ramster.errors import ExportTaken, NbdProtocolError
from ramster.frontswap.contract import Frontswap
from ramster.nbd import const, plan
from ramster.nbd.config import NbdConfig, allowed
from ramster.nbd.export import OPEN_AREAS, Export
from ramster.nbd.handshake import ExportInfo, Handshake
from ramster.nbd.statistics import ExportStatistics
from ramster.nbd.wire import PayloadTooLarge, Request, RequestDecoder, reply
from ramster.settings import parse_address

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NbdStatistics:
    """Counters of one NBD server."""

    connections_active: int
    connections_accepted: int
    connections_refused: int
    """Closed at once: the client's address is not on the allow-list."""
    connections_busy: int
    """Closed at once: max_connections were already open."""
    handshakes_failed: int
    """Broken or timed-out handshakes (a client's NBD_OPT_ABORT is not a failure)."""
    protocol_errors: int
    """Connections closed for breaking the protocol in transmission (bad magic, oversized)."""
    internal_errors: int
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    """Error replies by error name (EINVAL, ENOSPC, EIO, ...)."""
    bytes_read: int = 0
    bytes_written: int = 0
    inflight_peak: int = 0
    """Most requests one connection had read and not yet answered."""
    exports: dict[str, ExportStatistics] = field(default_factory=dict)


def local_exports(frontswap: Frontswap, config: NbdConfig) -> list[Export]:
    """`config.exports` over one frontswap (each in its own area of it)."""
    return [
        Export(frontswap, spec, config.max_payload, opener=OPEN_AREAS) for spec in config.exports
    ]


class NbdServer:
    """Serves the exports it is given; `start(exports)` returns when listening."""

    def __init__(self, config: NbdConfig) -> None:
        self.config = config
        self.exports: dict[str, Export] = {}
        self.infos: list[ExportInfo] = []
        self._server: asyncio.Server | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closing = False
        self._connections: set[_Connection] = set()
        self.address = config.listen
        """host:port actually listened on (known after start())."""
        self._accepted = 0
        self._refused = 0
        self._busy = 0
        self._handshakes_failed = 0
        self._protocol_errors = 0
        self._internal_errors = 0
        self._requests: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._bytes_read = 0
        self._bytes_written = 0
        self._inflight_peak = 0

    async def start(self, exports: Iterable[Export]) -> None:
        """Open every export, listen, and return once connections are taken. An export that may
        not be served here (ExportTaken: another server owns it) is left out."""
        given = list(exports)
        for export in given:
            self.exports[export.spec.name] = export
            self.infos.append(export.info)
        for export in given:  # not those add_export opened already
            name = export.spec.name
            try:
                await export.open()
            except ExportTaken as exc:
                log.error("nbd: export %s is not served here: %s", name, exc)  # noqa: TRY400
                del self.exports[name]
                self.infos[:] = [i for i in self.infos if i.name != name]
        host, port = parse_address(self.config.listen)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        bound_host = host if ":" not in host else f"[{host}]"
        self.address = f"{bound_host}:{sockname[1]}"
        ready = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name="nbd server")
        await ready.wait()
        for info in self.infos:
            spec = self.exports[info.name].spec
            log.info(
                "nbd: export %s (%d bytes, frontswap area %d) listening on %s",
                info.name,
                info.size,
                spec.area,
                self.address,
            )

    async def add_export(self, export: Export) -> None:
        """Serve one more export (opened here); new connections see it at once."""
        name = export.spec.name
        if name in self.exports:
            raise ValueError(f"export {name} is served already")
        await export.open()
        self.exports[name] = export
        self.infos.append(export.info)
        log.info("nbd: export %s (%d bytes) now served on %s", name, export.size, self.address)

    def remove_export(self, name: str) -> Export | None:
        """Stop serving an export: its connections are closed (their clients reconnect)."""
        export = self.exports.pop(name, None)
        if export is None:
            return None
        self.infos[:] = [i for i in self.infos if i.name != name]
        for conn in list(self._connections):
            if conn._export is export:
                conn.shutdown()
        log.warning("nbd: export %s no longer served here", name)
        return export

    async def _run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            ready.set()
            await self._stop.wait()
            self._tasks = None
            for conn in list(self._connections):
                conn.shutdown()

    async def close(self) -> None:
        """Stop listening, let connections finish what they read, then close them. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._stop.set()
        runner = self._runner
        if runner is not None:
            done, _ = await asyncio.wait({runner}, timeout=const.DRAIN_TIMEOUT)
            if not done:
                log.warning(
                    "nbd: connections still busy after %.0f s; cancelling", const.DRAIN_TIMEOUT
                )
                runner.cancel()
                try:
                    await runner
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
        for conn in list(self._connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections -----------------------------------------------------------------------------

    def _admit(self, conn: _Connection, host: str) -> bool:
        if self._closing or self._tasks is None:
            return False
        if not allowed(host, self.config.networks):
            self._refused += 1
            log.warning(
                "nbd: connection from %s refused: not on the allow-list (%d refused so far)",
                host,
                self._refused,
            )
            return False
        if len(self._connections) >= self.config.max_connections:
            self._busy += 1
            log.warning(
                "nbd: connection from %s refused: %d connections already open",
                host,
                len(self._connections),
            )
            return False
        self._accepted += 1
        self._connections.add(conn)
        self._tasks.create_task(conn.serve(), name=f"nbd connection {conn.peer}")
        return True

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    def statistics(self) -> NbdStatistics:
        """A snapshot of the server's and every export's counters."""
        return NbdStatistics(
            connections_active=len(self._connections),
            connections_accepted=self._accepted,
            connections_refused=self._refused,
            connections_busy=self._busy,
            handshakes_failed=self._handshakes_failed,
            protocol_errors=self._protocol_errors,
            internal_errors=self._internal_errors,
            requests=dict(self._requests),
            errors=dict(self._errors),
            bytes_read=self._bytes_read,
            bytes_written=self._bytes_written,
            inflight_peak=self._inflight_peak,
            exports={name: e.statistics() for name, e in self.exports.items()},
        )


class _Connection(asyncio.Protocol):
    """One client: protocol callbacks feed the decoders; serve() answers."""

    def __init__(self, server: NbdServer) -> None:
        self._server = server
        config = server.config
        self._max_inflight = config.max_inflight
        self._max_bytes = config.max_queued_bytes
        self._transport: asyncio.Transport | None = None
        self.peer = "?"
        self._handshake = Handshake(server.infos)
        self._decoder = RequestDecoder(config.max_payload)
        self._export: Export | None = None
        self._queue: collections.deque[Request] = collections.deque()
        self._executing = 0
        """Requests taken by the worker and not yet answered."""
        self._payload_bytes = 0
        """Write payload held by queued and executing requests."""
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False
        self._lost = False
        self._no_more_input = False
        """EOF, connection lost or server shutdown: nothing more will be read."""
        self._no_more_requests = False
        """DISC, a protocol violation or a closed handshake: nothing more will be decoded."""
        self._violation: NbdProtocolError | None = None
        self._logged: set[str] = set()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        self.peer = f"{host}:{peer[1]}" if peer else "?"
        if not self._server._admit(self, host):
            self._lost = True
            transport.abort()
            return
        transport.write(self._handshake.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self._no_more_requests or self._no_more_input:
            return
        hs = self._handshake
        if self._export is None:
            hs.receive(data)
            out = hs.data_to_send()
            if out and self._transport is not None:
                self._transport.write(out)
            if not hs.transmitting():
                if hs.closed():
                    self._no_more_requests = True
                    self._wake.set()
                self._update_reading()
                return
            assert hs.export is not None
            self._export = self._server.exports[hs.export.name]
            self._wake.set()
            data = hs.unused()
        self._decoder.feed(data)
        self._pump()

    def eof_received(self) -> bool:
        # Half-closed: answer what was read (like DISC), then serve() closes.
        self._no_more_input = True
        self._wake.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._no_more_input = True
        self._writable.set()
        self._wake.set()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        self._update_reading()

    # -- flow control ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Decode buffered requests while the in-flight and payload bounds allow."""
        if self._export is None or self._no_more_requests:
            return
        queue = self._queue
        decoder = self._decoder
        while self._executing + len(queue) < self._max_inflight and (
            self._payload_bytes < self._max_bytes
        ):
            try:
                request = decoder.next()
            except NbdProtocolError as exc:
                self._violation = exc
                self._no_more_requests = True
                break
            if request is None:
                break
            queue.append(request)
            self._payload_bytes += len(request.payload)
            if request.cmd == const.CMD_DISC:
                self._no_more_requests = True
                break
        inflight = self._executing + len(queue)
        self._server._inflight_peak = max(self._server._inflight_peak, inflight)
        self._wake.set()
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._lost:
            return
        pause = (
            self._no_more_requests
            or self._no_more_input
            or not self._writable.is_set()
            or self._executing + len(self._queue) >= self._max_inflight
            or self._payload_bytes >= self._max_bytes
        )
        if pause and not self._paused:
            transport.pause_reading()
        elif not pause and self._paused:
            transport.resume_reading()
        self._paused = pause

    # -- the worker ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Finish the requests already read, read no more, then close."""
        self._no_more_input = True
        self._update_reading()
        self._wake.set()

    def abort(self) -> None:
        """Close now, without finishing anything."""
        if self._transport is not None:
            self._transport.abort()

    async def serve(self) -> None:
        """Wait for the handshake, then answer requests until the client is done."""
        server = self._server
        try:
            if not await self._handshake_done():
                return
            await self._answer()
            if self._violation is not None:
                self._protocol_violation(self._violation)
        except Exception:
            server._internal_errors += 1
            log.exception("nbd: connection %s failed; closing it", self.peer)
        finally:
            server._forget(self)
            if self._transport is not None and not self._lost:
                self._transport.close()

    async def _handshake_done(self) -> bool:
        hs = self._handshake
        try:
            async with asyncio.timeout(self._server.config.handshake_timeout):
                while self._export is None and not (self._no_more_requests or self._no_more_input):
                    self._wake.clear()
                    await self._wake.wait()
        except TimeoutError:
            self._server._handshakes_failed += 1
            log.warning("nbd: %s did not finish its handshake in time; closing", self.peer)
            return False
        if self._export is not None:
            log.info("nbd: %s uses export %s", self.peer, self._export.spec.name)
            return True
        if hs.violation is not None:
            self._server._handshakes_failed += 1
            log.warning("nbd: handshake with %s failed: %s", self.peer, hs.violation)
        return False

    async def _answer(self) -> None:
        """Take batches of requests as they come and run them at once, each a task of this
        connection's TaskGroup (which waits for all of them before the connection closes): a
        batch waiting on its holders does not hold up the requests that came after it (the
        export orders mutations of one page; NBD orders nothing else in flight)."""
        queue = self._queue
        async with asyncio.TaskGroup() as batches:
            while True:
                self._pump()
                if not queue:
                    if self._no_more_requests or self._no_more_input:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._gather()
                batch = list(queue)
                queue.clear()
                self._executing += len(batch)
                batches.create_task(self._run_batch(batch))
                if not self._writable.is_set():
                    await self._writable.wait()

    async def _run_batch(self, batch: list[Request]) -> None:
        try:
            await self._execute(batch)
        finally:
            self._executing -= len(batch)
            self._payload_bytes -= sum(len(r.payload) for r in batch)
            self._pump()  # room for more: decode what is buffered, read again

    def _error_reply(self, request: Request, error: int) -> None:
        """Count an error reply; log the first of each kind on this connection."""
        name = const.ERROR_NAMES[error]
        self._server._errors[name] += 1
        if name in self._logged:
            return
        self._logged.add(name)
        log.warning(
            "nbd: %s: %s answered %s (offset %d, length %d, flags %#x); more %s replies on "
            "this connection are counted, not logged",
            self.peer,
            const.CMD_NAMES.get(request.cmd, f"command {request.cmd}"),
            name,
            request.offset,
            request.length,
            request.flags,
            name,
        )

    async def _gather(self) -> None:
        """Let requests already on their way join the batch: one loop turn at a time, while
        each turn brings more. A client refilling its queue depth sends requests one by one;
        one store of 32 pages costs far less than 32 stores of one (measured: 15 vs 130 us per
        page in the local pool), and a lone request waits one loop turn at most."""
        queue = self._queue
        while len(queue) + self._executing < self._max_inflight and not self._no_more_requests:
            before = len(queue)
            await asyncio.sleep(0)
            self._pump()
            if len(queue) == before:
                return

    def _protocol_violation(self, exc: NbdProtocolError) -> None:
        self._server._protocol_errors += 1
        if isinstance(exc, PayloadTooLarge):
            self._send([reply(exc.handle, const.EINVAL)])
            self._server._errors["EINVAL"] += 1
        log.warning("nbd: %s broke the protocol (%s); closing", self.peer, exc)

    def _send(self, buffers: Sequence[bytes]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.writelines(buffers)

    async def _execute(self, batch: list[Request]) -> None:
        """Answer a batch step by step (see `plan`); replies go out after every awaited step,
        so that a slow remote store does not hold back the answers already known."""
        export = self._export
        assert export is not None
        server = self._server
        requests = server._requests
        out: list[bytes] = []
        for step in plan.plan(batch, export.size, server.config.max_payload):
            run = step.requests
            for r in run:
                requests[const.CMD_NAMES.get(r.cmd, "unknown")] += 1
            request = run[0]
            if step.kind > 0:  # refused by check(): the kind is the error; sent with the next
                out.append(reply(request.handle, step.kind))
                self._error_reply(request, step.kind)
                continue
            if step.kind == plan.READ:
                results = await export.read_many([(r.offset, r.length) for r in run])
                for r, result in zip(run, results, strict=True):
                    if isinstance(result, int):
                        out.append(reply(r.handle, result))
                        self._error_reply(r, result)
                    else:
                        out.append(reply(r.handle))
                        out += result
                        server._bytes_read += r.length
            elif step.kind == plan.MUTATE:
                codes = await export.mutate([plan.mutation(r) for r in run])
                for r, code in zip(run, codes, strict=True):
                    out.append(reply(r.handle, code))
                    if code:
                        self._error_reply(r, code)
                    elif r.cmd == const.CMD_WRITE:
                        server._bytes_written += r.length
            elif step.kind == plan.DISC:
                continue
            else:
                if request.cmd == const.CMD_FLUSH:
                    code = await export.flush()
                elif request.cmd == const.CMD_TRIM:
                    code = await export.trim(request.offset, request.length)
                else:
                    code = await export.write_zeroes(request.offset, request.length)
                out.append(reply(request.handle, code))
                if code:
                    self._error_reply(request, code)
            self._send(out)
            out = []
        if out:
            self._send(out)
