"""Replicated NBD exports in the simulation (`--exports`): served, written, moved, checked.

Every node is given an NBD address; one (drawn) names export `e0` on its command line, as
`ramster node --nbd-export` would. Each run of a node starts the `NbdServer` its `Node` built
as `node.run` does (`_start_nbd`: listen once the command line's exports are ready, then resume
the exports `exports.json` says this node served) and the simulated loop's `create_server` gives
it its listening address. The workload drives the
`Export` block logic directly (`write_many`, `read_many`, `trim`, `write_zeroes`, `flush`) from
tasks in the serving node's process, now and then through a stale server (one an operator moved
the export away from, which may not know yet). Operator actions run the node API the admin
calls: `move_export` (with and without force), `delete_export`, `drain`; and an export fault
restarts the server (kill -9, state directory kept) while 0 to 2 other nodes are paused.

Checkers: the byte model (`blocks.ExportModel`) on every read, and a strict read-back of every
block through the export's one server after healing; fencing on every acknowledgement (see
`_acked`); after healing, exactly one node serves the export (unless it was deleted).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ramster.cluster.exports import export_owner
from ramster.errors import RamsterError
from ramster.nbd import const, manifest
from ramster.nbd.export import Export
from ramster.node.export_rebuild import DATA_AREA
from ramster.node.export_served import ExportState, Served
from ramster.node.run import _start_nbd
from ramster.pagestore.lent import LentPool
from ramster.testing.sim.blocks import BLOCK, ZERO, ExportModel, content
from ramster.testing.sim.cluster import SimNode, host_of


async def _apply(
    export: Export, kind: str, blocks: list[int], datas: list[bytes]
) -> tuple[list[int], list[bytes | int]]:
    """Run one operation on the export: an error per block (one for a flush), and what a
    read got per block (bytes or an error)."""
    if kind == "write":
        writes = [(b * BLOCK, d) for b, d in zip(blocks, datas, strict=True)]
        return await export.write_many(writes), []
    if kind == "read":
        results = await export.read_many([(b * BLOCK, BLOCK) for b in blocks])
        return [0] * len(blocks), [r if isinstance(r, int) else b"".join(r) for r in results]
    if kind == "flush":
        return [await export.flush()], []
    call = export.trim if kind == "trim" else export.write_zeroes
    return [await call(blocks[0] * BLOCK, len(blocks) * BLOCK)] * len(blocks), []


def _slots_of(key: int) -> tuple[int, int]:
    """Both keys of the manifest page that `key` is a slot of."""
    page = key % manifest.SLOT_STRIDE
    return manifest.slot_key(page, 0), manifest.slot_key(page, 1)


def _version(lent: LentPool, area: int, offset: int) -> int | None:
    """The version of an export copy a lent pool holds, None if none."""
    ident = lent._ids.get((OWNER, "", area))
    return None if ident is None else lent.pool.versions(ident, [offset])[0]


if TYPE_CHECKING:
    from ramster.testing.sim.run import Simulation

NAME = "e0"
OWNER = f"export:{NAME}"
NBD_PORT = 10809
REPLICAS = 2
QUIET = 5.0
"""Seconds with every node up, reachable and fast (dead_after, then a repair round) after which
an export read's EIO must be excused as one after healing."""
HELD_HERE = (
    " though the server's own lent pool holds a copy (a takeover that could not store it elsewhere)"
)


@dataclass
class Op:
    """One export operation in flight."""

    node: str
    life: int
    blocks: list[int]
    datas: list[bytes] = field(default_factory=list)
    server: tuple[str, int] = ("", 0)
    """(node, term) that runs it."""
    at_start: list[frozenset[bytes]] = field(default_factory=list)
    """A read's: what each block could read as when it began."""


@dataclass(frozen=True)
class Serving:
    """A server began serving a term of the export."""

    at: float
    node: str
    term: int
    forced: bool


class ExportSim:
    """The exports of one simulated run: configuration, workload, operator actions, checks."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = rng = random.Random(sim.rng.getrandbits(64))
        self.blocks = rng.choice((8, 16, 32, 64, 64))
        self.compressible = rng.random() < 0.5
        """Incompressible blocks fill the holders' small lent budgets (refused stores)."""
        self.rate = rng.choice((0.3, 0.5, 0.7))
        """Share of the steps that act on the export (the rest: frontswap and faults)."""
        self.action_rate = rng.choice((0.05, 0.1, 0.2))
        """Share of those that are operator actions or export faults."""
        first = rng.choice(sim.cluster.nodes)
        for n in sim.cluster.nodes:
            n.config = dataclasses.replace(
                n.config,
                nbd=f"{host_of(n.index)}:{NBD_PORT}",
                nbd_exports=(f"{NAME}:{self.blocks * BLOCK}",) if n is first else (),
                nbd_swap_safety=False,
            )
        self.model = ExportModel(NAME, self.blocks, REPLICAS)
        self.life = 0
        self.deleted = False
        self.deleted_term = 0
        """The term the export was deleted under: a server of it or an older one (cut off from
        the deletion, it has not heard yet) serves the deleted life, not the new one."""
        self.drained = False
        self.busy: dict[int, list[tuple[str, int]]] = {}
        """Blocks with operations in flight, and the (node, term) of each: operations of one
        block may overlap (now and then) only on one server, which orders them."""
        self.inflight: dict[int, Op] = {}
        self.ids = itertools.count()
        self.serial = 0
        self.crashed: list[str] = []
        """Nodes that lost their memory, in order."""
        self.serving: list[Serving] = []
        self.acks_after_force = 0
        self.troubled_at = 0.0
        """When a node was last impaired or crashed (see `_quiet`)."""

    # -- hooks of the simulation -----------------------------------------------------------------

    def booted(self, node: SimNode) -> None:
        """A new run of node: watch its export events and start its NBD server."""
        assert node.node is not None
        service = node.node.exports
        original = service.opener._event  # the keeper's is the same: the node's event log
        sim = self.sim

        def event(kind: str, name: str, detail: str, level: int) -> object:
            if kind == "export-serving" and name == NAME:
                served = service.served.get(name)
                term = served.term if served is not None else 0
                forced = "forced without" in detail
                self.serving.append(Serving(sim.loop.time(), node.name, term, forced))
                sim.note(f"export {name} served by {node.name}: {detail}")
                if forced:
                    self.model.forced_takeover()
            elif name == NAME:
                sim.note(f"export {name} on {node.name}: {kind} {detail}")
            return original(kind, name, detail, level)

        service.opener._event = service.keeper._event = event
        self._watch_drops(node)
        sim.spawn(node, self._serve(node))

    def _watch_drops(self, node: SimNode) -> None:
        """Copy before drop (invariant 4), where a server rebuilding the export drops copies
        from its own lent pool (rehome, stale copies): each copy of a manifest page, or of a
        block whose acknowledged bytes the model needs, needs a copy of the same key, as new or
        newer, on another running node's lent pool at that instant."""
        made = node.node
        assert made is not None
        lent = made.lent
        original = lent.drop
        nodes = self.sim.cluster.nodes

        def drop(
            owner: str,
            inc: str,
            areas: Sequence[int],
            offsets: Sequence[int],
            versions: Sequence[int] | None = None,
            seq: int | None = None,
        ) -> list[bool]:
            served = made.exports.served.get(NAME)
            suspect: dict[int, str] = {}
            if (
                owner == OWNER
                and versions is not None
                and served
                and served.state is ExportState.REBUILDING
            ):
                for i, (area, offset, version) in enumerate(
                    zip(areas, offsets, versions, strict=True)
                ):
                    if lent._area_id(owner, inc, area, create=False) is None:
                        continue
                    mine = _version(lent, area, offset)
                    if mine is None or mine > version:
                        continue  # nothing of that version here to drop
                    if area == DATA_AREA and not self._needed(offset):
                        continue  # trimmed, or its write failed: garbage, rightly dropped
                    # A manifest page is either of its slots: an older slot's copy may go
                    # once the page is held elsewhere as new or newer.
                    keys = (offset,) if area == DATA_AREA else _slots_of(offset)
                    if not any(
                        (v := _version(n.node.lent, area, key)) is not None and v >= version
                        for n in nodes
                        for key in keys
                        if n is not node and n.node is not None and n.up
                    ):
                        suspect[i] = (
                            f"invariant 4 on {node.name}: rebuilding {NAME} it dropped its copy "
                            f"of area {area} block {offset} v{version:#x}, held nowhere else"
                        )
            # Only what the lent pool really drops counts (a fenced server's drop is refused).
            dropped = original(owner, inc, areas, offsets, versions, seq)
            self.sim.failures.extend(why for i, why in suspect.items() if dropped[i])
            return dropped

        lent.drop = drop  # type: ignore[method-assign]

    async def _serve(self, node: SimNode) -> None:
        made = node.node
        assert made is not None
        try:
            await _start_nbd(made)
        except RamsterError as exc:
            self.sim.note(f"nbd of {node.name} did not start: {exc!r}")

    def crashed_node(self, node: SimNode) -> None:
        """node lost its memory: its operations in flight never end (their writes failed)."""
        self.crashed.append(node.name)
        self.troubled_at = self.sim.loop.time()
        for key, op in list(self.inflight.items()):
            if op.node == node.name:
                self._end(key, [const.EIO] * len(op.blocks))

    def impaired(self) -> set[str]:
        """Nodes that may miss a copy right now."""
        return self.sim.impaired() | {n.name for n in self.sim.cluster.nodes if not n.up}

    # -- who serves ------------------------------------------------------------------------------

    def servers(self) -> list[tuple[SimNode, Served]]:
        """Nodes that serve the export now (a stale one among them until it learns it is)."""
        out = []
        for n in self.sim.cluster.nodes:
            if n.up and n.node is not None:
                served = n.node.exports.served.get(NAME)
                if served is not None and served.state is ExportState.SERVING:
                    out.append((n, served))
        return out

    # -- the workload ----------------------------------------------------------------------------

    async def act(self) -> None:
        """Draw one export operation, operator action or export fault."""
        rng = self.rng
        if rng.random() < self.action_rate:
            await self.action()
            return
        servers = [(n, s) for n, s in self.servers() if n.serving]
        if not servers:
            return
        servers.sort(key=lambda ns: ns[1].term)
        # Mostly the newest server; now and then a stale one (a client that did not reconnect).
        node, served = servers[-1] if rng.random() < 0.75 else rng.choice(servers)
        roll = rng.random()
        if roll < 0.1:
            self._spawn(node, served, "flush", [])
            return
        count = rng.choice((1, 1, 2, 4, 8))
        if roll < 0.3:  # a range: trim or write_zeroes
            first = rng.randrange(self.blocks)
            blocks = list(range(first, min(first + count, self.blocks)))
            kind = "trim" if roll < 0.2 else "zeroes"
        else:
            blocks = sorted({rng.randrange(self.blocks) for _ in range(count)})
            kind = "write" if roll < 0.7 else "read"
        if not self._may_run(node, served, blocks):
            return
        self._spawn(node, served, kind, blocks)

    def _may_run(self, node: SimNode, served: Served, blocks: list[int]) -> bool:
        """Blocks not in flight; or, a third of the time, in flight only on this server (it
        must keep the order of mutations of one block, and run the others at once)."""
        busy = [self.busy[b] for b in blocks if b in self.busy]
        if not busy:
            return True
        here = (node.name, served.term)
        return self.rng.random() < 0.35 and all(s == here for ops in busy for s in ops)

    def _spawn(self, node: SimNode, served: Served, kind: str, blocks: list[int]) -> None:
        key = next(self.ids)
        if served.term <= self.deleted_term:
            # The deleted life (its server missed the deletion): not the new life's.
            self._stale_life(node, served, kind, blocks)
            return
        op = Op(node.name, self.life, blocks, server=(node.name, served.term))
        if kind == "write":
            for b in blocks:
                self.serial += 1
                op.datas.append(content(NAME, b, self.serial, self.compressible))
        elif kind in ("trim", "zeroes"):
            op.datas = [ZERO] * len(blocks)
        if kind != "read":
            for b, data in zip(blocks, op.datas, strict=True):
                self.model.begin(b, data)
        else:
            op.at_start = [frozenset(self.model.state[b].possible) for b in blocks]
        for b in blocks:
            self.busy.setdefault(b, []).append(op.server)
        self.inflight[key] = op
        self.sim.spawn(node, self._run(key, op, served, kind))

    def _stale_life(self, node: SimNode, served: Served, kind: str, blocks: list[int]) -> None:
        """An operation through a server of the deleted life, not checked: what it reads is
        not the new life's, and what it writes (versions below the deletion's floor) the new
        life never sees. Without a lease (issue 25) a server cut off from the deletion may
        still be answered by holders cut off with it."""
        datas = [content(NAME, b, 0, self.compressible) for b in blocks]

        async def run() -> None:
            try:
                errors, _ = await _apply(served.export, kind, blocks, datas)
            except RamsterError as exc:
                errors = [const.EIO]
                self.sim.note(f"export {kind} on {node.name} (deleted life) raised {exc!r}")
            self.sim.note(f"export {kind} {blocks} on {node.name} t{served.term} (deleted life)"
                          f" -> {errors}")  # fmt: skip

        self.sim.spawn(node, run())

    def check(self) -> None:
        """After every step: note when the cluster was last impaired."""
        if self.impaired():
            self.troubled_at = self.sim.loop.time()

    def _quiet(self, started: float) -> str | None:
        """A "while healthy" reason when nothing was impaired (down, paused, cut off, slow)
        nor crashed for QUIET seconds before a read began and while it ran: then an EIO must
        be excused as after healing. None otherwise."""
        now = self.sim.loop.time()
        if self.impaired() or started - self.troubled_at < QUIET:
            return None
        return f"while the cluster was healthy for {now - self.troubled_at:.1f} s"

    async def _run(self, key: int, op: Op, served: Served, kind: str) -> None:
        node = next(n for n in self.sim.cluster.nodes if n.name == op.node)
        term = served.term
        started = self.sim.loop.time()
        errors: list[int]
        got: list[bytes | int] = []
        try:
            errors, got = await _apply(served.export, kind, op.blocks, op.datas)
        except RamsterError as exc:
            self.sim.note(f"export {kind} on {op.node} raised {exc!r}")
            errors = [const.EIO] * max(len(op.blocks), 1)
        if key not in self.inflight:
            return  # its node crashed meanwhile (counted as failed then)
        what = f"{kind} {op.blocks}"
        self.sim.note(f"export {what} on {op.node} t{term} -> {errors}")
        if kind != "read" and not any(errors):
            self._acked(op.node, served, term, started, what, len(op.blocks))
        if got and op.life == self.life:
            # A server that learnt it was moved away answers EIO (its client must go to the
            # new one): no error of the block's.
            moved = served.export.fenced is not None or served.tier.fenced is not None
            strict = None if moved else self._quiet(started)
            for b, one, before in zip(op.blocks, got, op.at_start, strict=True):
                problem = self.model.check_read(b, one, strict, self.crashed, before)
                if problem and isinstance(one, int) and self._held_by_server(node, served, b):
                    problem += HELD_HERE
                if problem:
                    self.sim.failures.append(f"nbd byte model: {problem} (via {op.node} t{term})")
        self._end(key, errors if kind != "read" else [])

    def _end(self, key: int, errors: list[int]) -> None:
        op = self.inflight.pop(key)
        if op.life == self.life:
            for b in op.blocks:
                ops = self.busy.get(b)
                if ops is not None:
                    ops.remove(op.server)
                    if not ops:
                        del self.busy[b]
            for b, data, error in zip(op.blocks, op.datas, errors, strict=False):
                self.model.done(b, data, not error, self.impaired(), len(self.crashed))

    def _acked(
        self, node: str, served: Served, term: int, started: float, what: str, op_blocks: int
    ) -> None:
        """Fencing, on every acknowledgement (write, trim, zeroes, flush):

        - no server acknowledges anything once a holder told it that it is fenced (its
          frontswap records the first ExportFenced answer): invariant 10;
        - no server acknowledges an operation it began after a server of a newer term began
          serving, unless that one was forced without hearing every node (then the holders it
          did not hear never learnt the new term; a forced move may lose such writes by design,
          and they are counted; a flush acknowledges no new write and is left out). An
          unforced server serves only after claiming its term on every member, so every copy
          the old server sends after that is refused: an acknowledgement means a write the new
          server never sees.
        """
        why = served.tier.fenced or served.export.fenced
        if why is not None:
            self.sim.failures.append(
                f"fencing: {node} (term {term}) acknowledged {what} after a holder told it that "
                f"it is fenced: {why}"
            )
        if not op_blocks:
            return  # a flush with nothing to store acknowledges nothing new
        newer = [s for s in self.serving if s.term > term and s.at < started]
        if newer and all(s.forced for s in newer):
            self.acks_after_force += 1
        elif newer:
            s = next(s for s in newer if not s.forced)
            self.sim.failures.append(
                f"fencing: {node} (term {term}) acknowledged {what} begun at "
                f"t={started:.4f}, after {s.node} began serving term {s.term} at t={s.at:.4f}"
            )

    # -- operator actions and export faults ------------------------------------------------------

    async def action(self) -> None:
        """Move (maybe forced), delete, drain, or restart the server with holders paused."""
        rng = self.rng
        sim = self.sim
        nodes = sim.cluster.nodes
        running = [n for n in nodes if n.serving and n.node is not None]
        if not running:
            return
        roll = rng.random()
        if roll < 0.45:
            servers = sorted(self.servers(), key=lambda ns: ns[1].term)
            current = servers[-1][0].name if servers else ""
            others = [n for n in nodes if n.name != current]
            # Mostly to a node that holds copies (it must rehome them: copy before drop).
            holding = [n for n in others if self._holds(n)]
            to = rng.choice(holding if holding and rng.random() < 0.6 else others)
            via = rng.choice(running)
            force = rng.random() < 0.25
            sim.note(f"export move {NAME} to {to.name} via {via.name} force={force}")
            self._operator(via, f"move to {to.name}", lambda n: n.move_export(NAME, to.name, force))
            # Its client goes on writing to the old server while the new one claims its term
            # (first writes of blocks too: their manifest goes to every live node).
            for _ in range(rng.choice((0, 1, 2, 3, 4)) if servers else 0):
                sim.loop.call_later(rng.uniform(0.0, 0.05), self._write_to, servers[-1])
        elif roll < 0.9:
            await self.restart_server()
        elif roll < 0.95 and not self.drained and len(nodes) > 3:
            self.drained = True
            target = rng.choice(nodes)
            via = rng.choice(running)
            sim.note(f"drain {target.name} via {via.name}")
            self._operator(via, f"drain {target.name}", lambda n: n.drain(target.name))
        elif roll >= 0.95 and rng.random() < 0.3 and not self.deleted:
            self.deleted = True
            via = rng.choice(running)
            sim.note(f"export delete {NAME} via {via.name}")
            self._operator(via, "delete", lambda n: n.delete_export(NAME), deleting=True)

    def _write_to(self, where: tuple[SimNode, Served]) -> None:
        """A write of a few blocks not in flight, through a given server (if it runs), mostly
        of blocks not written yet."""
        if not where[0].serving or where[1].state is not ExportState.SERVING:
            return
        rng = self.rng
        blank = [b for b, st in enumerate(self.model.state) if st.possible == {ZERO}]
        pool = blank if blank and rng.random() < 0.7 else list(range(self.blocks))
        blocks = sorted({rng.choice(pool) for _ in range(rng.choice((1, 2, 4, 8)))})
        if self._may_run(where[0], where[1], blocks):
            self._spawn(where[0], where[1], "write", blocks)

    def _operator(
        self, via: SimNode, what: str, call: Callable[[Any], Any], deleting: bool = False
    ) -> None:
        async def run() -> None:
            assert via.node is not None
            try:
                result = await call(via.node)
            except RamsterError as exc:
                self.sim.note(f"operator {what}: {type(exc).__name__}: {str(exc)[:120]}")
                if deleting:  # some copies may be dropped, some not
                    self.model.forced_takeover()
                return
            self.sim.note(f"operator {what}: {result}")
            if deleting:
                # A new life: whatever serves the name from now on starts blank.
                self.deleted_term = via.node.lent.terms.deleted_term(export_owner(NAME))
                self.life += 1
                self.model = ExportModel(NAME, self.blocks, REPLICAS, self.model)
                self.busy.clear()
                if any(s.term > self.deleted_term for s in self.serving):
                    # A forced move raced the deletion and serves a newer term: what it wrote
                    # before the deletion ended was of the new life too (and is in `earlier`).
                    self.model.forced_takeover()

        self.sim.spawn(via, run())

    async def restart_server(self) -> None:
        """kill -9 the newest server and restart it at once, with 0-2 other nodes paused for a
        while (it must hear them before it serves again: unknown is not empty)."""
        sim, rng = self.sim, self.rng
        servers = sorted(self.servers(), key=lambda ns: ns[1].term)
        if not servers or any(not n.up for n in sim.cluster.nodes):
            return
        server = servers[-1][0]
        others = [n for n in sim.cluster.nodes if n is not server and n.serving]
        paused = rng.sample(others, min(len(others) - 1, rng.choice((0, 1, 1, 2))))
        for n in paused:
            sim.cluster.pause(n)
            sim.model.unreachable(n.name)
        sim.note(f"export restart {server.name}, paused {[n.name for n in paused]}")
        sim.crash(server)
        await sim.boot(server)
        if paused:
            procs = [(n, n.proc) for n in paused]
            sim.loop.call_later(rng.uniform(0.5, 6.0), self._resume, procs)

    def _resume(self, procs: list[tuple[SimNode, Any]]) -> None:
        for n, proc in procs:
            if n.proc is proc and n.up and not n.serving:
                self.sim.cluster.resume(n)
                self.sim.note(f"resume {n.name}")

    def _needed(self, block: int) -> bool:
        """The block's acknowledged content is bytes no other block state allows losing."""
        st = self.model.state[block] if block < self.blocks else None
        return st is not None and st.acked and not st.unsure and ZERO not in st.possible

    @staticmethod
    def _holds(n: SimNode) -> bool:
        return n.node is not None and n.up and bool(n.node.lent.pages_by_owner().get(OWNER))

    @staticmethod
    def _held_by_server(node: SimNode, served: Served, block: int) -> bool:
        assert node.node is not None
        owner, _ = served.holders.owner_identity
        lent = node.node.lent
        ident = lent._ids.get((owner, "", DATA_AREA))  # read without telling anyone anything
        held = None if ident is None else lent.pool.versions(ident, [block])[0]
        return held is not None and held > lent._floor(owner, "", DATA_AREA)

    # -- after healing ---------------------------------------------------------------------------

    async def settle(self) -> None:
        """After healing: exactly one server (unless deleted), then every block read back."""
        servers = self.servers()
        if not servers:
            if self.deleted:
                return
            self.sim.fail(f"liveness: export {NAME} is served by no node after healing")
        if len(servers) > 1:
            named = sorted((n.name, s.term) for n, s in servers)
            self.sim.fail(f"liveness: export {NAME} served by {named} after healing")
        node, served = servers[0]
        busy = set(self.busy)
        blocks = [b for b in range(self.blocks) if b not in busy]
        ranges = [(b * BLOCK, BLOCK) for b in blocks]
        task = self.sim.cluster.spawn(node, served.export.read_many(ranges))
        results = await task
        logging.getLogger(__name__).debug("read back %d blocks", len(blocks))
        for b, r in zip(blocks, results, strict=True):
            got = r if isinstance(r, int) else b"".join(r)
            problem = self.model.check_read(b, got, "after healing", self.crashed)
            if problem:
                if isinstance(got, int) and self._held_by_server(node, served, b):
                    problem += HELD_HERE
                self.sim.fail(f"nbd byte model: {problem} (read back via {node.name})")
        self.sim.note(
            f"export {NAME}: {len(blocks)} blocks read back via {node.name} t{served.term}; "
            f"{self.acks_after_force} acks after forced takeovers"
        )
