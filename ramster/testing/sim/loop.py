"""The simulation's event loop: virtual time (looptime), one process per simulated node.

Every callback is scheduled in the context of the node ("process") that scheduled it; the loop
runs it only while that process lives and is not paused. A crashed process's callbacks are
dropped (its memory is gone, nothing of it runs again); a paused one's are held and run, in
order, when it resumes (SIGSTOP: its timers fire late, its memory is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import looptime

if TYPE_CHECKING:
    from ramster.testing.sim.network import SimNetwork

PROC: contextvars.ContextVar[Proc | None] = contextvars.ContextVar("sim_proc", default=None)
"""The simulated process whose code is running."""

MAX_CPU_US = 150
"""Upper bound of the virtual microseconds one pass of the loop costs."""
SLOW_PASS = 0.01
MAX_SLOW_US = 20000
"""How often a pass is slow, and how slow it may be."""

EPOCH = 1_800_000_000.0
"""Virtual wall-clock time at virtual monotonic 0 (time.time() inside a run)."""


@dataclass(eq=False)
class Proc:
    """One run of a simulated node: its context, and whether it lives or is paused."""

    name: str
    generation: int
    dead: bool = False
    paused: bool = False
    held: list[tuple[Callable[..., object], tuple[Any, ...], contextvars.Context]] = field(
        default_factory=list
    )
    context: contextvars.Context = field(default_factory=contextvars.Context)
    work: int = 0
    """Units of work its code reported (see model.ReclaimMeter): pages freed, so far."""
    busiest: int = 0
    """The most work one of its callbacks did: one pass of a real loop that long stalls it."""

    def __post_init__(self) -> None:
        self.context = contextvars.copy_context()
        self.context.run(PROC.set, self)

    def fork(self) -> contextvars.Context:
        """A fresh context of this process (for one of its tasks or callbacks)."""
        return self.context.copy()


class SimLoop(looptime.LoopTimeEventLoop, asyncio.SelectorEventLoop):
    """A selector loop whose clock is virtual and whose sockets are a SimNetwork."""

    network: SimNetwork | None = None

    def __init__(self, cpu: random.Random | None = None) -> None:
        # No real I/O ever happens here: time jumps to the next timer after one idle cycle.
        super().__init__(noop_cycles=1, start=0.0)
        self._cpu = cpu
        self._cpu_us = 0

    def time(self) -> float:
        return super().time() + self._cpu_us / 1e6

    def _run_once(self) -> None:
        # Every pass of the loop costs a little virtual time, as running callbacks costs real
        # time: a timer can fall due between two steps of one chain of callbacks, not only
        # while the loop idles (the interleavings that real clocks produce).
        cpu = self._cpu
        if cpu is not None:
            # Now and then a pass is slow (a collection, a big batch, a busy core).
            slow = cpu.random() < SLOW_PASS
            self._cpu_us += cpu.randrange(MAX_SLOW_US if slow else MAX_CPU_US)
        super()._run_once()  # type: ignore[misc]

    # -- gating callbacks by process -----------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        ctx = context if context is not None else contextvars.copy_context()
        proc = ctx.get(PROC)
        if proc is None:
            return super().call_soon(callback, *args, context=ctx)
        return super().call_soon(self._gate, proc, callback, args, ctx, context=ctx)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        ctx = context if context is not None else contextvars.copy_context()
        proc = ctx.get(PROC)
        if proc is None:
            return super().call_at(when, callback, *args, context=ctx)
        return super().call_at(when, self._gate, proc, callback, args, ctx, context=ctx)

    def _gate(
        self,
        proc: Proc,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        ctx: contextvars.Context,
    ) -> None:
        if proc.dead:
            return
        if proc.paused:
            proc.held.append((callback, args, ctx))
            return
        before = proc.work
        callback(*args)
        proc.busiest = max(proc.busiest, proc.work - before)

    def resume(self, proc: Proc) -> None:
        """Let a paused process run again: what it missed runs first, in order."""
        proc.paused = False
        held, proc.held = proc.held, []
        for callback, args, ctx in held:
            super().call_soon(self._gate, proc, callback, args, ctx, context=ctx)

    # -- the network ---------------------------------------------------------------------------

    async def create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int,
        **_: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:  # fmt: skip
        assert self.network is not None
        return await self.network.connect(protocol_factory, host, port)

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int,
        **_: Any,
    ) -> asyncio.AbstractServer:  # fmt: skip
        assert self.network is not None
        return self.network.listen(protocol_factory, host, port)

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Threads would make a run depend on the machine: the work runs inline, at once."""
        future = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # handed to the awaiting task, as a thread's would be
            future.set_exception(exc)
        return future


class _SeededRandom(random.Random):
    """random.Random() without a seed draws its seed from the run's seed."""

    source: random.Random | None = None

    def __init__(self, x: Any = None) -> None:
        if x is None and _SeededRandom.source is not None:
            x = _SeededRandom.source.getrandbits(64)
        super().__init__(x)


@contextlib.contextmanager
def virtual_world(loop: SimLoop, rng: random.Random) -> Iterator[None]:
    """Make the process's clocks read the loop's virtual time and its randomness come from rng.

    Production code reads time.monotonic()/time.time() directly in places; inside a run they
    all see one virtual clock, so a timeout measured either way agrees with the loop.
    """
    saved = (
        time.monotonic,
        time.time,
        time.time_ns,
        random.Random,
        secrets.token_bytes,
        secrets.token_hex,
        random.getstate(),
    )
    _SeededRandom.source = random.Random(rng.getrandbits(64))
    random.seed(rng.getrandbits(64))
    time.monotonic = loop.time
    time.time = lambda: EPOCH + loop.time()
    time.time_ns = lambda: int((EPOCH + loop.time()) * 1e9)
    random.Random = _SeededRandom  # type: ignore[misc]
    secrets.token_bytes = lambda nbytes=None: rng.randbytes(32 if nbytes is None else nbytes)
    secrets.token_hex = lambda nbytes=None: rng.randbytes(32 if nbytes is None else nbytes).hex()
    try:
        yield
    finally:
        (
            time.monotonic,
            time.time,
            time.time_ns,
            random.Random,  # type: ignore[misc]
            secrets.token_bytes,
            secrets.token_hex,
            state,
        ) = saved
        random.setstate(state)
        _SeededRandom.source = None
