"""An in-memory TCP for the simulation: ordered byte streams between simulated processes.

Each write is one segment, delivered whole after a delay drawn from the run's seed, in order
per direction. A blocked direction (a partition) holds its segments until healed, as TCP's
retransmissions would; connects across a blocked path hang until healed or timed out. A crash
closes its process's connections (the peers see a reset); a cut resets one connection.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ramster.testing.sim.loop import PROC, Proc, SimLoop

Address = tuple[str, int]
FIN = b""
"""A queued end of stream."""


@dataclass(eq=False)
class _Direction:
    """One direction of a connection: segments on their way, delivered in order."""

    src: str
    dst: str
    receiver: SimTransport
    queue: collections.deque[tuple[float, bytes | None]] = field(default_factory=collections.deque)
    timer: asyncio.TimerHandle | None = None
    last_at: float = 0.0


class SimTransport(asyncio.Transport):
    """One end of a simulated connection."""

    def __init__(self, net: SimNetwork, proc: Proc, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._net = net
        self.proc = proc
        self._protocol = protocol
        self.peer: SimTransport | None = None
        self.out: _Direction | None = None
        self.closed = False
        self.lost = False
        self.reading = True
        self.names: dict[str, object] = {}

    # -- asyncio.Transport ----------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.names.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._net.send(self, FIN)
        self._net.lose_later(self, None)

    def abort(self) -> None:
        if self.closed and self.lost:
            return
        self.closed = True
        self._net.reset(self)

    def write(self, data: Any) -> None:
        if self.closed:
            return
        self._net.send(self, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            if self.peer is not None and self.peer.out is not None:
                self._net.pump_soon(self.peer.out)

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Hand a segment to the protocol."""
        protocol = self._protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view and not self.lost:
                buf = memoryview(protocol.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone for this end: tell its protocol once."""
        if self.lost:
            return
        self.lost = True
        self.closed = True
        self._protocol.connection_lost(exc)


class SimServer(asyncio.AbstractServer):
    """A listening address of one process."""

    def __init__(self, net: SimNetwork, address: Address) -> None:
        self._net = net
        self.address = address
        self._closed = asyncio.Event()

    @property
    def sockets(self) -> tuple[Any, ...]:
        address = self.address

        class _Sock:
            def getsockname(self) -> Address:
                return address

        return (_Sock(),)

    def close(self) -> None:
        self._net.unlisten(self.address)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def is_serving(self) -> bool:
        return not self._closed.is_set()

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        await self._closed.wait()


class SimNetwork:
    """Addresses, connections, partitions and delays, all drawn from one seeded rng."""

    def __init__(self, loop: SimLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.listeners: dict[Address, tuple[Proc, Callable[[], asyncio.BaseProtocol]]] = {}
        self.blocked: set[tuple[str, str]] = set()
        """(src, dst) node names whose segments are held (asymmetric partitions)."""
        self.slow: dict[str, float] = {}
        """Extra delay (seconds) of every segment to or from a node."""
        self.base_delay = 0.0005
        self.jitter = 0.002
        self.transports: list[SimTransport] = []
        self._heal: asyncio.Event = asyncio.Event()
        self.segments = 0
        self._next_port = 40000

    # -- processes and addresses ----------------------------------------------------------------

    def listen(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> SimServer:
        """Accept connections at host:port for the running process."""
        proc = PROC.get()
        assert proc is not None, "a server is started by a simulated process"
        if port == 0:
            self._next_port += 1
            port = self._next_port
        if (host, port) in self.listeners and not self.listeners[(host, port)][0].dead:
            raise OSError(98, f"address {host}:{port} in use")
        self.listeners[(host, port)] = (proc, factory)
        return SimServer(self, (host, port))

    def unlisten(self, address: Address) -> None:
        """Stop accepting at address."""
        self.listeners.pop(address, None)

    def crash(self, proc: Proc) -> None:
        """The process is gone: its listeners close, its peers see its connections reset."""
        for address, (owner, _) in list(self.listeners.items()):
            if owner is proc:
                del self.listeners[address]
        for t in self.transports:
            if t.proc is proc and not t.lost:
                t.lost = True
                t.closed = True
                if t.out is not None:
                    t.out.queue.clear()
                    self._schedule(t.out, None)
        self._gc()

    def cut(self, a: str, b: str) -> int:
        """Reset every connection between nodes a and b: how many."""
        n = 0
        for t in list(self.transports):
            if t.out is not None and not t.lost and (t.out.src, t.out.dst) == (a, b):
                t.abort()
                n += 1
        return n

    def path_open(self, a: str, b: str) -> bool:
        """Segments flow both ways between a and b."""
        return (a, b) not in self.blocked and (b, a) not in self.blocked

    def heal(self) -> None:
        """Lift every partition; held segments go on their way."""
        self.blocked.clear()
        self._heal.set()
        self._heal = asyncio.Event()
        for t in self.transports:
            if t.out is not None and t.out.queue:
                self.pump_soon(t.out)

    def unblock(self, src: str, dst: str) -> None:
        """Lift one direction of a partition."""
        self.blocked.discard((src, dst))
        self._heal.set()
        self._heal = asyncio.Event()
        for t in self.transports:
            if t.out is not None and t.out.src == src and t.out.dst == dst and t.out.queue:
                self.pump_soon(t.out)

    # -- connections ---------------------------------------------------------------------------

    async def connect(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Open a connection from the running process to host:port."""
        src = PROC.get()
        assert src is not None, "a connection is opened by a simulated process"
        await asyncio.sleep(self._delay(src.name, src.name))
        entry = self.listeners.get((host, port))
        while entry is not None and not self.path_open(src.name, entry[0].name):
            await self._heal.wait()  # SYNs lost until healed; the caller's timeout ends it
            entry = self.listeners.get((host, port))
        if entry is None or entry[0].dead:
            raise ConnectionRefusedError(111, f"connection refused by {host}:{port}")
        dst, server_factory = entry
        protocol = factory()
        client = SimTransport(self, src, protocol)
        server_protocol = dst.fork().run(server_factory)
        server = SimTransport(self, dst, server_protocol)
        client.peer, server.peer = server, client
        client.out = _Direction(src.name, dst.name, server)
        server.out = _Direction(dst.name, src.name, client)
        self._next_port += 1
        client.names = {"peername": (host, port), "sockname": (src.name, self._next_port)}
        server.names = {"peername": (src.name, self._next_port), "sockname": (host, port)}
        self.transports += [client, server]
        self.loop.call_soon(server_protocol.connection_made, server, context=dst.fork())
        protocol.connection_made(client)
        return client, protocol

    def _delay(self, src: str, dst: str) -> float:
        extra = self.slow.get(src, 0.0) + self.slow.get(dst, 0.0)
        return self.base_delay + self.rng.random() * self.jitter + extra

    def send(self, t: SimTransport, data: bytes) -> None:
        """Queue a segment (or FIN) from t to its peer."""
        if t.out is None or t.lost:
            return
        self.segments += 1
        self._schedule(t.out, data)

    def _schedule(self, d: _Direction, data: bytes | None) -> None:
        at = max(round(self.loop.time() + self._delay(d.src, d.dst), 6), d.last_at)
        d.last_at = at
        d.queue.append((at, data))
        if d.timer is None:
            self.pump_soon(d)

    def reset(self, t: SimTransport) -> None:
        """Abort t: unsent data is discarded, the peer sees a reset, t is lost at once."""
        if t.out is not None:
            t.out.queue.clear()
            self._schedule(t.out, None)
        self.lose_later(t, None)

    def lose_later(self, t: SimTransport, exc: Exception | None) -> None:
        """t's protocol learns its connection is gone, soon, in its own process."""
        self.loop.call_soon(t.connection_lost, exc, context=t.proc.fork())

    def pump_soon(self, d: _Direction) -> None:
        """Deliver d's due segments (when its path is open) at the head's time."""
        if d.timer is not None:
            d.timer.cancel()
            d.timer = None
        if not d.queue or (d.src, d.dst) in self.blocked:
            return
        when = max(d.queue[0][0], self.loop.time())
        d.timer = self.loop.call_at(when, self._pump, d)

    def _pump(self, d: _Direction) -> None:
        d.timer = None
        if d.receiver.lost:
            d.queue.clear()
            return
        if (d.src, d.dst) not in self.blocked:
            self.loop.call_soon(self._deliver_due, d, context=d.receiver.proc.fork())

    def _deliver_due(self, d: _Direction) -> None:
        """In the receiver's process: every segment due, in order, while it reads."""
        receiver = d.receiver
        now = self.loop.time() + 1e-7  # looptime counts whole microseconds
        while d.queue and d.queue[0][0] <= now and not receiver.lost:
            data = d.queue[0][1]
            if data is None:
                d.queue.clear()
                receiver.connection_lost(ConnectionResetError(104, "connection reset by peer"))
                return
            if data == FIN:
                d.queue.popleft()
                protocol = receiver.get_protocol()
                keep = isinstance(protocol, asyncio.Protocol | asyncio.BufferedProtocol) and bool(
                    protocol.eof_received()
                )
                if not keep:
                    receiver.closed = True
                    receiver.connection_lost(None)
                continue
            if not receiver.reading:
                return  # resume_reading pumps again
            d.queue.popleft()
            receiver.receive(data)
        if receiver.lost:
            d.queue.clear()
        else:
            self.pump_soon(d)

    def _gc(self) -> None:
        self.transports = [
            t for t in self.transports if not (t.lost and (t.peer is None or t.peer.lost))
        ]
