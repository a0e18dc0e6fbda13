"""One simulated run: a seed draws the cluster, the workload and the faults; checkers watch.

Each step draws one action (an owner's store, load or invalidate, or a fault), then lets
virtual time pass. After the last step every fault is healed, the cluster settles, and the
liveness checks and a strict read-back of every page run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import logging
import random
import sys
import tempfile
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramster.errors import RamsterError
from ramster.pagestore.index import LEAF_SIZE
from ramster.rpc.connection import ClientConnection
from ramster.testing.sim import hostile
from ramster.testing.sim.cluster import PORT, SimCluster, SimNode, host_of
from ramster.testing.sim.exports import ExportSim
from ramster.testing.sim.liveness import check_liveness, leaked_slots
from ramster.testing.sim.loop import SimLoop, virtual_world
from ramster.testing.sim.model import HolderWatch, Model, ReclaimMeter, Violation
from ramster.testing.sim.network import SimNetwork

AREA = 0
FAULTS = ("crash", "pause", "partition", "cut", "slow", "slow-holder", "hostile")
ENDS = {
    "crash": "restart",
    "pause": "resume",
    "partition": "heal",
    "cut": "cut",
    "slow": "fast",
    "slow-holder": "fast-holders",
    "hostile": "hostile",
}
"""Each fault, and what ends it."""
SLOT_CHECKS = 8
"""Steps in a row a connection must be short of call slots to count as leaking them."""
TRACE_TAIL = 40
STEP_PAGES = 1
"""Pages a simulated holder frees per reclaim step (4096 in production: the areas here are
small). A step frees up to that many pages of forgotten owners, or sweeps index leaves until
it did (one leaf: LEAF_SIZE slots scanned, up to LEAF_SIZE pages freed); one callback doing
more stalls its loop (see model.ReclaimMeter)."""
MAX_WORK = STEP_PAGES + 2 * LEAF_SIZE
WHOLE_AREA = -1
"""In `busy` with an owner: its area is being invalidated (no store may start meanwhile)."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended."""

    seed: int
    steps: int
    failure: str | None
    step: int
    trace_hash: str
    tail: tuple[str, ...]
    virtual_seconds: float
    exports: bool = False

    def report(self) -> str:
        """The failure, where it happened and the events before it (for a human)."""
        head = f"seed {self.seed}: step {self.step}/{self.steps}, t={self.virtual_seconds:.3f}"
        lines = [f"FAIL {head}: {self.failure}", "last events:"]
        lines += [f"  {e}" for e in self.tail]
        lines.append(
            f"replay: python -m ramster.testing.sim --seed {self.seed} --steps {self.steps}"
            + (" --exports" if self.exports else "")
        )
        return "\n".join(lines)


class Simulation:
    """The driver of one seed."""

    def __init__(
        self,
        seed: int,
        steps: int,
        loop: SimLoop,
        root: Path,
        *,
        echo: bool = False,
        only: str | None = None,
        exports: bool = False,
    ) -> None:
        self.seed = seed
        self.echo = echo
        self.only = only
        """Count only failures whose message contains this (hunting one kind of bug)."""
        self.steps = steps
        self.rng = random.Random(seed)
        self.loop = loop
        self.net = SimNetwork(loop, random.Random(self.rng.getrandbits(64)))
        loop.network = self.net
        rng = self.rng
        n = rng.choice((3, 4, 4, 5))
        self.page_bytes = rng.choice((64, 512, 1024, 1024))
        self.keys = rng.choice((16, 48, 96, 160))
        self.call_timeout = rng.choice((1.0, 2.0, 5.0))
        self.cluster = SimCluster(
            loop,
            self.net,
            n,
            root,
            local_budget=rng.choice((8, 16, 32)) * 1024,
            lent_budget=rng.choice((24, 32, 48, 128)) * 1024,
            replicas=2,
            heartbeat=0.5,
            dead_after=2.5,
            owner_grace=30.0,
            max_in_flight=rng.choice((1, 1, 2, 2, 4, 8)),
            call_timeout=self.call_timeout,
        )
        self.model = Model(2, self.impaired)
        # Swarm testing: each seed runs a subset of the faults, at its own rate, so that some
        # seeds pile one kind of trouble up instead of diluting every kind.
        starts = [k for k in FAULTS if rng.random() < 0.6] or [rng.choice(FAULTS)]
        self.kinds = [*starts, *dict.fromkeys(ENDS[k] for k in starts)]
        self.fault_rate = rng.choice((0.05, 0.12, 0.25))
        self.failures: list[str] = []
        self.busy: set[tuple[str, int]] = set()
        self.ready: set[str] = set()
        self.trace: collections.deque[str] = collections.deque(maxlen=TRACE_TAIL)
        self.digest = hashlib.sha256()
        self.step = 0
        self.serial = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.short_slots: dict[ClientConnection, int] = {}
        self.still_short: dict[ClientConnection, int] = {}
        self.slow_holders: dict[str, float] = {}
        """Seconds each holder's page calls wait before they run."""
        self.incarnations: dict[str, set[str]] = {}
        """Every incarnation each node ran (holders must know no other)."""
        self.exports = ExportSim(self) if exports else None
        """Replicated NBD exports, their operator actions and checkers (`--exports`)."""

    def impaired(self) -> set[str]:
        """Nodes that may miss a spill right now."""
        out = {n.name for n in self.cluster.nodes if not n.serving}
        out |= {a for pair in self.net.blocked for a in pair}
        return out | set(self.net.slow) | set(self.slow_holders)

    # -- trace ---------------------------------------------------------------------------------

    def note(self, event: str) -> None:
        """Record an event in the trace (hashed; the tail is kept for a failure report)."""
        line = f"{self.step:5d} t={self.loop.time():9.4f} {event}"
        self.trace.append(line)
        self.digest.update(line.encode())
        if self.echo:
            print(line, flush=True)

    def fail(self, what: str) -> None:
        """A checker failed: the run stops, unless only failures matching `only` count."""
        if self.only is not None and self.only not in what:
            self.note(f"ignored: {what}")
            return
        raise Violation(what)

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the cluster, run the steps, heal, settle, check."""
        for node in self.cluster.nodes:
            await self.boot(node)
        await asyncio.sleep(3.0)
        for step in range(1, self.steps + 1):
            self.step = step
            await self.act()
            await asyncio.sleep(self.rng.expovariate(1 / 0.05))
            self.check_always()
        self.step = self.steps + 1
        await self.heal_and_settle()

    async def boot(self, node: SimNode) -> None:
        """Start a run of node and let its owner workload begin."""
        await self.cluster.start(node)
        assert node.node is not None
        HolderWatch(node.name, node.node.lent, self.failures)
        assert node.proc is not None
        ReclaimMeter(node.node.lent, node.proc, STEP_PAGES)
        self.incarnations.setdefault(node.name, set()).add(node.node.incarnation)
        self.cluster.slow_holder(node, lambda: self.slow_holders.get(node.name, 0.0))
        self.model.restarted(node.name)
        self.note(f"start {node.name} run {node.runs}")
        self.spawn(node, self._init(node))
        if self.exports is not None:
            self.exports.booted(node)

    async def _init(self, node: SimNode) -> None:
        assert node.node is not None
        await node.node.frontswap.init(AREA)
        self.ready.add(node.name)

    def spawn(self, node: SimNode, coro: Coroutine[Any, Any, None]) -> None:
        """Run a workload coroutine as a task of node's process."""
        task = self.cluster.spawn(node, coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def act(self) -> None:
        """Draw and start one action."""
        rng = self.rng
        roll = rng.random()
        if roll < self.fault_rate:
            await self.fault()
            return
        if self.exports is not None and rng.random() < self.exports.rate:
            await self.exports.act()
            return
        owners = [n for n in self.cluster.nodes if n.serving and n.name in self.ready]
        if not owners:
            return
        owner = rng.choice(owners)
        if (owner.name, WHOLE_AREA) in self.busy:
            return
        if roll > 0.985:  # swapoff: the whole area goes (the holders' sweeps), then swapon
            if not any(name == owner.name for name, _ in self.busy):
                self.busy.add((owner.name, WHOLE_AREA))
                self.spawn(owner, self.swapoff(owner))
            return
        # Bursts: calls started in one instant share their deadlines (as a kernel's batch).
        for _ in range(rng.choice((1, 1, 2, 4, 8))):
            # A few hot keys are overwritten often: writes race with repairs and moves.
            key = rng.randrange(4) if rng.random() < 0.4 else rng.randrange(self.keys)
            if (owner.name, key) in self.busy:
                continue
            self.busy.add((owner.name, key))
            if roll < 0.65:
                self.spawn(owner, self.store(owner, key))
            elif roll < 0.93:
                self.spawn(owner, self.load(owner, key, strict=False))
            else:
                self.spawn(owner, self.invalidate(owner, key))

    async def store(self, owner: SimNode, key: int) -> None:
        """Store a fresh page under key, as the model expects."""
        assert owner.node is not None
        self.serial += 1
        tag = f"{owner.name}:{key}:{self.serial}|".encode()
        unit = tag + self.rng.randbytes(self.page_bytes)
        page = (unit * (4096 // len(unit) + 1))[:4096]
        run = owner.runs
        self.model.store_started(owner.name, key, page)
        ok: bool | None
        try:
            ok = await owner.node.frontswap.store(AREA, key, page)
        except RamsterError as exc:
            ok = None
            self.note(f"store {owner.name} {key} #{self.serial} raised {type(exc).__name__}")
        finally:
            self.busy.discard((owner.name, key))
        if run == owner.runs:
            self.model.store_done(owner.name, key, page, ok)
            self.note(f"store {owner.name} {key} #{self.serial} -> {ok}")

    async def load(self, owner: SimNode, key: int, strict: bool) -> None:
        """Load key and check it against the model."""
        assert owner.node is not None
        run = owner.runs
        got: bytes | None = None
        error: BaseException | None = None
        try:
            got = await owner.node.frontswap.load(AREA, key)
        except RamsterError as exc:
            error = exc
        finally:
            self.busy.discard((owner.name, key))
        if run != owner.runs:
            return
        what = "None" if got is None else got[:20].split(b"|")[0].decode()
        self.note(f"load {owner.name} {key} -> {type(error).__name__ if error else what}")
        try:
            self.model.check_load(owner.name, key, got, error, strict)
        except Violation as exc:
            self.failures.append(str(exc))

    async def invalidate(self, owner: SimNode, key: int) -> None:
        """Forget key."""
        assert owner.node is not None
        run = owner.runs
        self.model.invalidate_started(owner.name, key)
        try:
            await owner.node.frontswap.invalidate_page(AREA, key)
        except RamsterError as exc:
            self.note(f"invalidate {owner.name} {key} raised {type(exc).__name__}")
            return
        finally:
            self.busy.discard((owner.name, key))
        if run == owner.runs:
            self.model.invalidate_done(owner.name, key)
            self.note(f"invalidate {owner.name} {key}")

    async def swapoff(self, owner: SimNode) -> None:
        """Invalidate the owner's whole area, then initialise it again."""
        assert owner.node is not None
        run = owner.runs
        self.model.invalidate_area_started(owner.name)
        try:
            await owner.node.frontswap.invalidate_area(AREA)
        except RamsterError as exc:
            self.note(f"swapoff {owner.name} raised {type(exc).__name__}")
        else:
            if run == owner.runs:
                self.model.invalidate_area_done(owner.name)
                self.note(f"swapoff {owner.name}")
        try:
            await owner.node.frontswap.init(AREA)
        finally:
            self.busy.discard((owner.name, WHOLE_AREA))

    # -- faults --------------------------------------------------------------------------------

    async def fault(self) -> None:
        """Draw one fault (or the end of one)."""
        rng = self.rng
        nodes = self.cluster.nodes
        names = [n.name for n in nodes]
        kind = rng.choice(self.kinds)
        node = rng.choice(nodes)
        if kind == "crash" and node.up and sum(not n.up for n in nodes) == 0:
            self.crash(node)
        elif kind == "restart":
            for n in nodes:
                if not n.up:
                    await self.boot(n)
                    break
        elif kind == "pause" and node.serving and sum(not n.serving for n in nodes) == 0:
            self.cluster.pause(node)
            self.model.unreachable(node.name)
            self.note(f"pause {node.name}")
        elif kind == "resume":
            for n in nodes:
                if n.up and not n.serving:
                    self.cluster.resume(n)
                    self.note(f"resume {n.name}")
        elif kind == "partition":
            a, b = rng.sample(names, 2)
            self.net.blocked.add((a, b))
            self.model.unreachable(a, b)
            if rng.random() < 0.5:
                self.net.blocked.add((b, a))
            self.note(f"partition {sorted(self.net.blocked)}")
        elif kind == "heal":
            self.net.heal()
            self.note("heal")
        elif kind == "cut":
            a, b = rng.sample(names, 2)
            self.note(f"cut {a}-{b}: {self.net.cut(a, b)} connections")
        elif kind == "slow":
            self.net.slow[node.name] = rng.choice((0.05, 0.3, 1.5))
            self.model.unreachable(node.name)
            self.note(f"slow {node.name} {self.net.slow[node.name]}")
        elif kind == "slow-holder":
            # "edge": answers arrive just before their callers' deadlines.
            edge = self.call_timeout - rng.uniform(0.0, 0.004)
            self.slow_holders[node.name] = rng.choice((0.2, 0.9, 3.0, edge, edge))
            self.model.unreachable(node.name)
            self.note(f"slow holder {node.name} {self.slow_holders[node.name]}")
        elif kind == "fast-holders":
            self.slow_holders.clear()
            self.note("fast holders")
        elif kind == "hostile":
            for attack in hostile.plan(rng, nodes, self.keys, AREA):
                attacker = next(n for n in nodes if n.name == attack.attacker)
                self.note(attack.describe())
                target = next(n for n in nodes if n.name == attack.target)
                address = (host_of(target.index), PORT)
                self.spawn(
                    attacker, hostile.send(attacker, attack, self.note, self.failures, address)
                )
        elif kind == "fast":
            self.net.slow.clear()
            self.note("fast")

    def crash(self, node: SimNode) -> None:
        """kill -9 node (its state directory is kept)."""
        self.cluster.crash(node)
        self.model.crashed(node.name)
        self.ready.discard(node.name)
        if self.exports is not None:
            self.exports.crashed_node(node)
        self.note(f"crash {node.name}")

    # -- checks --------------------------------------------------------------------------------

    def check_always(self) -> None:
        """After every step: recorded failures, and invariant 3 on every node."""
        # Only steps in a row count: a connection not checked at a step (its node paused or
        # gone) starts again from 0.
        self.short_slots, self.still_short = self.still_short, {}
        if self.exports is not None:
            self.exports.check()
        failures, self.failures[:] = list(self.failures), []
        for what in failures:
            self.fail(what)
        forged = hostile.check_identities(self.cluster.nodes, self.incarnations)
        if forged:
            self.fail(forged)
        for n in self.cluster.nodes:
            if not n.up or n.node is None:
                continue
            self.observe_holders(n)
            if n.serving:  # a paused node's slot in hand-over waits for it to run again
                self.check_slots(n)
            assert n.proc is not None
            if n.proc.busiest > MAX_WORK:
                self.fail(
                    f"{n.name} did {n.proc.busiest} units of reclaim work in one pass of its loop "
                    f"(at most {MAX_WORK}): a holder's area or owner drop is not incremental "
                    f"(bug 7)"
                )
            for label, stats in (
                ("local", n.node.frontswap.pool.statistics()),
                ("lent", n.node.lent.statistics().pool),
            ):
                if stats.pool_total_size > stats.pool_limit:
                    self.fail(
                        f"invariant 3 on {n.name}: {label} pool uses {stats.pool_total_size} "
                        f"bytes of a {stats.pool_limit} budget"
                    )

    def check_slots(self, n: SimNode) -> None:
        """Bug 6's symptom: a connection short of call slots at several steps in a row (a slot
        in hand-over is short for one pass of the loop; a leaked one stays short)."""
        assert n.node is not None
        for peer in n.node.peers.peers():
            for conn in peer.client._conns:
                leaked = leaked_slots(conn)
                seen = self.short_slots.get(conn, 0) + 1 if leaked else 0
                self.still_short[conn] = seen
                if seen >= SLOT_CHECKS:
                    self.fail(
                        f"{n.name}'s connection to {peer.node_id} lost {leaked} of "
                        f"{conn._config.max_in_flight} call slots for good (bug 6)"
                    )

    def observe_holders(self, n: SimNode) -> None:
        """Tell the model how many holders the owner records for each of its remote pages."""
        assert n.node is not None
        fs = n.node.tier
        sets = list(fs.pool.remote_set_counts())
        if not sets:
            return
        count = {s: len(fs.holder_set(s)) for s in sets}
        holders = {
            offset: count[set_id]
            for area, offset, _, _, set_id in fs.pool.remote_in_sets(sets)
            if area == AREA
        }
        self.model.observe_holders(n.name, holders)

    async def heal_and_settle(self) -> None:
        """End every fault, let repairs run, then check liveness and read every page back."""
        self.net.heal()
        self.net.slow.clear()
        self.slow_holders.clear()
        for n in self.cluster.nodes:
            if n.up and not n.serving:
                self.cluster.resume(n)
            if not n.up:
                await self.boot(n)
        self.note("healed")
        await asyncio.sleep(30.0)
        self.check_always()

        problem = await check_liveness(self)
        if problem:
            self.fail(problem)
        if self.exports is not None:
            await self.exports.settle()
        for owner in self.cluster.nodes:
            for key in sorted(self.model.keys.get(owner.name, {})):
                self.busy.add((owner.name, key))
                self.spawn(owner, self.load(owner, key, strict=True))
        await asyncio.sleep(10.0)
        self.check_always()


def _close_coroutines(loop: SimLoop) -> None:
    """Close what the run's tasks left: a crashed process's never resume, and one that never
    started would warn ("never awaited") whenever a later collection finds it."""
    for task in asyncio.all_tasks(loop):
        coro = task.get_coro()
        with contextlib.suppress(BaseException):
            coro.close()


def run_seed(
    seed: int,
    steps: int,
    *,
    verbose: bool = False,
    echo: bool = False,
    only: str | None = None,
    exports: bool = False,
) -> Outcome:
    """Run one seed in a fresh loop; never raises for a checker's failure (it is reported)."""
    loop = SimLoop(cpu=random.Random(seed ^ 0xC0FFEE))
    loop.set_exception_handler(lambda _loop, _context: None)
    failure: str | None = None
    quiet = logging.getLogger("ramster").level, logging.getLogger("asyncio").level
    if not verbose:
        logging.getLogger("ramster").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    hook = sys.unraisablehook
    # The coroutines of crashed processes are never resumed; closing them at collection is
    # not an error of the run.
    sys.unraisablehook = lambda _: None
    with tempfile.TemporaryDirectory(prefix=f"ramster-sim-{seed}-") as tmp:
        sim = Simulation(seed, steps, loop, Path(tmp), echo=echo, only=only, exports=exports)
        try:
            with virtual_world(loop, random.Random(seed ^ 0x5EED)):
                loop.run_until_complete(sim.run())
        except Violation as exc:
            failure = str(exc)
        finally:
            for n in sim.cluster.nodes:
                if n.up:
                    sim.cluster.crash(n)
            loop.close()
            outcome = Outcome(
                seed,
                steps,
                failure,
                sim.step,
                sim.digest.hexdigest()[:16],
                tuple(sim.trace),
                loop.time(),
                exports,
            )
            loop.network = None
            _close_coroutines(loop)
            # Drop every reference to the run before collecting: what a crashed process left
            # (tasks that never ran, in cycles) must go now, while its warnings are ignored,
            # not in some later test's collection.
            del sim, loop
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # crashed nodes' coroutines
                gc.collect()
                gc.collect()
            sys.unraisablehook = hook
            logging.getLogger("ramster").setLevel(quiet[0])
            logging.getLogger("asyncio").setLevel(quiet[1])
    return outcome
