"""The replicated exports a node serves: each hears the nodes that may hold its copies, takes a
term, rebuilds its index from the holders, is kept alive, repaired and, once another server
takes it over, fenced and retired.

A replicated export has a frontswap of its own (`ClusterFrontswap(replicated=True)`): its pages
belong to `export:NAME`, not to this process, so they outlive it. Its data area is 0 and its
manifest (which blocks were written, see `nbd.manifest`) area 1.

What a server must have heard before it serves (`export_served.required_nodes`): when it
resumes an export it created, served or took over (its `ExportRecord` says so), every node of
the record's holders; otherwise (a takeover, no record) every member it knows, the current
server included. Until then the export is not served (its NBD port does not listen yet, or a
move is refused unless forced, before any term is taken; once its term is taken a move waits
instead, see `_hear`). Its term and creation are on disk (`node.export_records`) before any
holder hears them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ramster.cluster.exports import ExportHolders, export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportPending, ExportTaken, RamsterError
from ramster.frontswap.remote import ClusterFrontswap, SpillConfig
from ramster.nbd.config import LOCAL, REPLICATED, ExportSpec
from ramster.nbd.export import OPEN_AREAS, Export
from ramster.nbd.server import NbdServer
from ramster.node.config import NodeConfig
from ramster.node.export_claims import DELETE_RETRY, ExportClaims
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA, Heard, Rebuilder
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import (
    DISCOVERY_SETTLE,
    HEAR_RETRY,
    INDEX_BYTES_PER_PAGE,
    KEEPALIVE_EVERY,
    MANIFEST_REPLICAS,
    REPAIR_EVERY,
    UNHEARD_LOG_EVERY,
    Attempt,
    Served,
    TermTie,
    claim_answers,
    deleted_floor,
    describe,
    fenced_here,
    required_nodes,
)
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import MAX_EXPORT_TERM, TERM_SHIFT

log = logging.getLogger(__name__)

__all__ = ["DATA_AREA", "MANIFEST_AREA", "MAX_EXPORT_TERM", "TERM_SHIFT", "ExportService"]


class ExportService:
    """Builds the node's exports (local ones over the node's frontswap) and tends replicated
    ones; `run()` is owned by the node's TaskGroup."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        frontswap: ClusterFrontswap,
        events: Callable[[str, str, str, int], object],
        lent: LentPool,
        records: ExportRecords,
        nbd: NbdServer | None,
    ) -> None:
        self.config = config
        self.records = records
        """What this node remembers of its exports across restarts (terms, creation)."""
        self.lent = lent
        """This node as a holder: it may hold copies of an export it takes over."""
        self.peers = peers
        self.frontswap = frontswap
        self._event = events
        self.served: dict[str, Served] = {}
        self.nbd = nbd
        """Where exports are served (None: the node serves no NBD)."""
        self._tg: asyncio.TaskGroup | None = None
        self._max_payload = 32 << 20
        self._pending: list[str] = []  # exports to resume once run() owns a TaskGroup
        self._opening: dict[str, asyncio.Future[None]] = {}
        """Takeovers under way: how each ends (a move's answer may come before it serves)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()
        self.claims = ExportClaims(peers, lent, records, events)
        """Terms across the cluster: asking, taking, sizes, deletions."""

    # -- building ----------------------------------------------------------------------------------

    def named(self) -> list[Export]:
        """The exports the command line names (none without NBD)."""
        if self.nbd is None:
            return []
        return [self.build(spec, self.nbd.config.max_payload) for spec in self.nbd.config.exports]

    def resume(self, named: set[str]) -> list[str]:
        """Serve again, in the background, the replicated exports this node served when it
        stopped that its command line does not name (moved here), unless they were moved away
        or deleted meanwhile (see `_attempt`); their names."""
        if self.nbd is None:
            return []
        names = [r.name for r in self.records.all() if r.serving and r.size and r.name not in named]
        self._pending += names
        self._start_pending()
        return names

    def _start_pending(self) -> None:
        while self._tg is not None and self._pending:
            name = self._pending.pop()
            self._tg.create_task(self._resume(name), name=f"resume export {name}")

    async def _resume(self, name: str) -> None:
        record = self.records.get(name)
        if self.nbd is None or record is None or name in self.nbd.exports:
            return
        spec = ExportSpec(name, record.size, 31, REPLICATED)
        export = self.build(spec, self.nbd.config.max_payload)
        try:
            await self.nbd.add_export(export)
        except ExportTaken as exc:
            log.warning("export %s: not resumed: %s", name, exc)
        else:
            log.info("export %s: resumed here (this node served it when it stopped)", name)

    def build(
        self, spec: ExportSpec, max_payload: int, *, takeover: bool = False, force: bool = False
    ) -> Export:
        """The Export for a spec: over the node's frontswap (local) or one of its own."""
        self._max_payload = max_payload
        if spec.durability == LOCAL:
            return Export(self.frontswap, spec, max_payload, opener=OPEN_AREAS)
        cfg = self.config
        name, size = spec.name, spec.size

        def remember(nodes: frozenset[str]) -> None:
            self.records.update(name, size, holders=nodes)

        holders = ExportHolders(self.peers, name, 0, remember)
        record = self.records.get(name)
        if record is not None:
            holders.may_hold = frozenset(record.holders)
        pages = spec.size // cfg.page_size
        fs = ClusterFrontswap(
            PoolConfig(
                page_size=cfg.page_size,
                budget_bytes=pages * INDEX_BYTES_PER_PAGE + (8 << 20),
            ),
            holders,
            SpillConfig(replicas=cfg.replicas),
            max_areas=2,
            replicated=True,
            cache_bytes=cfg.export_cache,
        )
        # The manifest is tiny (4 KiB per 128 MiB) and tells lost blocks from unwritten ones:
        # it goes to every live peer (up to MANIFEST_REPLICAS), not just R.
        fs.replicas_of[MANIFEST_AREA] = MANIFEST_REPLICAS

        served = Served(spec, fs, holders, self, max_payload, takeover=takeover, force=force)
        self.served[spec.name] = served
        return served.export

    # -- start: hear, claim, rebuild --------------------------------------------------------------

    async def prepare(self, served: Served) -> None:
        """Before the export takes connections: hear every node that may know better, take the
        next term, rebuild the index (see `_attempt` for what must be heard)."""
        try:
            await self._open(served)
        except BaseException:
            if self.served.get(served.spec.name) is served:
                del self.served[served.spec.name]  # not served here: it may be moved here
            raise

    async def _open(self, served: Served) -> None:
        started = time.monotonic()
        name = served.spec.name
        served.state = "hearing"
        waited_since = time.monotonic()
        told = 0.0
        while True:
            attempt = await self._attempt(served)
            if attempt.ready:
                break
            if attempt.retry:
                await asyncio.sleep(HEAR_RETRY * random.random())  # two takers: one wins
                continue
            why = f"cannot hear {', '.join(sorted(attempt.missing))}: they may hold newer copies"
            if served.takeover:
                raise ExportTaken(
                    f"export {name}: {why}; `ramster export move --force` takes it over without "
                    "them (what only they hold is lost)"
                )
            now = time.monotonic()
            if now - told >= UNHEARD_LOG_EVERY:
                told = now
                log.warning("export %s: not served yet (%.0f s): %s", name, now - waited_since, why)
            await asyncio.sleep(HEAR_RETRY)
        rebuilder = self._rebuilder(served)
        served.state = "rebuilding"
        log.info("export %s: term %d, rebuilding from the holders", name, served.term)
        await served.export.open_areas()
        t0 = time.monotonic()
        if attempt.new:
            # Known new (see _attempt): recorded as created before its first page is stored.
            self.records.update(name, served.spec.size, created=True)
        rebuilt, written, lost, unstored = await rebuilder.rebuild(attempt.heard, attempt.new)
        self.records.update(name, served.spec.size, created=True)
        served.export.restore_index(written, lost)
        served.export.hold(rebuilder.kept_here.get(DATA_AREA, {}))
        # What could not be stored (no peer yet) is stored before the first write's answer.
        served.export.mark_manifest(unstored)
        await rebuilder.settle_uncertain(served.export)
        served.holders.set_may_hold(served.holders.may_hold | attempt.heard.holding())
        took = max(time.monotonic() - t0, 1e-6)
        served.rebuild.update(
            pages=float(rebuilt.pages),
            lost=float(len(lost)),
            holders=float(len(attempt.heard.data)),
            rebuild_s=took,
            pages_per_s=rebuilt.pages / took,
            unheard=float(len(attempt.missing)),
            seconds=time.monotonic() - started,
        )
        served.state = "serving"
        log.info(
            "export %s: serving (term %d): %d pages rebuilt in %.2f s (%.0f pages/s), %d lost, "
            "%d stale copies to drop",
            name,
            served.term,
            rebuilt.pages,
            served.rebuild["seconds"],
            served.rebuild.get("pages_per_s", 0.0),
            len(lost),
            sum(len(v[0]) for v in rebuilt.stale.values()),
        )
        unheard = (
            f", forced without {', '.join(sorted(attempt.missing))}" if attempt.missing else ""
        )
        self._event(
            "export-serving",
            name,
            f"term {served.term}, {rebuilt.pages} pages, {len(lost)} lost{unheard}",
            logging.WARNING if len(lost) or attempt.missing else logging.INFO,
        )
        if self._tg is not None:
            served.task = self._tg.create_task(self._tend(served), name=f"export {name}")

    def fenced(self, served: Served) -> str | None:
        """Why the export is fenced (see `export_served.fenced_here`), or None."""
        return fenced_here(served, self.lent, self.peers.me)

    def _rebuilder(self, served: Served) -> Rebuilder:
        owner, inc = served.holders.owner_identity
        spec, ps = served.spec, self.config.page_size
        return Rebuilder(self.peers, self.lent, ps, spec.name, spec.size, served.fs, owner, inc)

    async def _attempt(self, served: Served) -> Attempt:
        """Ask every node, then take the next term and hear the required nodes: not ready (and
        no term taken) while a required node does not answer a claim; once the term is taken,
        ready when every one was heard (`_hear` waits for them) or the operator forced a
        takeover. ExportTaken when another server owns the export."""
        name, size, me = served.spec.name, served.spec.size, self.peers.me
        owner = export_owner(name)
        record = self.records.get(name)
        asked = await self.claims.ask(name, sorted(self.peers.alive()))
        own = self.claims.here(name)
        newest_term, newest_node = max(
            [(a.term, a.node) for a in asked.values()] + [(own.term, own.node)]
        )
        mine = record.term if record is not None else 0
        current = newest_node if newest_node and newest_node != me else ""
        # Another node's claim of this node's recorded term counts too, unless a holder knows
        # this node's: a term it recorded (first) and no holder heard before it stopped may have
        # been taken again by a move.
        heard_mine = (own.term, own.node) == (mine, me) or any(
            (a.term, a.node) == (mine, me) for a in asked.values()
        )
        if (
            not served.takeover
            and current
            and (newest_term > mine or (newest_term == mine and not heard_mine))
        ):
            if record is not None:
                self.records.update(name, size, serving=False)
            raise ExportTaken(
                f"export {name} is served by {current} under term {newest_term} (moved away or "
                "deleted): not served here (`ramster export move` brings it back)"
            )
        if not served.takeover and record is not None and record.created and not record.serving:
            raise ExportTaken(
                f"export {name} was moved away from this node (term {record.term}): not served "
                "here again unless moved back (`ramster export move`)"
            )
        required = required_nodes(self.peers, served, record, current)
        if not required and self._discovering() and not (record is not None and record.created):
            # Unknown is not empty: nobody to hear may only mean nobody found yet.
            return Attempt(missing={"the members mDNS has not found yet"})
        missing = required - set(asked)
        if missing and not served.force:
            return Attempt(missing=missing)  # refused (a move) or waited for: no term taken
        # The term is on disk before any holder hears it: a restarted server never reuses it
        # (and so never a version: versions of term T start at T << TERM_SHIFT).
        term = max(newest_term, mine) + 1
        if term > MAX_EXPORT_TERM:
            # Nothing is claimed nor recorded: whoever serves it now goes on.
            raise ExportTaken(
                f"export {name}: no term is left to take (term {max(newest_term, mine)} is "
                f"claimed; the last is {MAX_EXPORT_TERM}): it cannot be served again; an "
                "operator must delete it (`ramster export delete`) and create it anew"
            )
        if served.takeover:
            # A takeover commits here (see _hear): recorded as this node's to serve, of an
            # export that exists (never started blank), whose possible holders are every node
            # it must hear; a restart resumes it and hears them all before it serves.
            served.holders.set_may_hold(served.holders.may_hold | (required & set(asked)))
            self.records.update(name, size, term=term, serving=True, created=True)
        else:
            self.records.update(name, size, term=term, serving=True)
        served.term = term
        served.holders.set_term(term)
        # Never a version of the next term: past its 2^40 versions a term refuses writes
        # (a restart or a move takes a new term and writes again).
        served.fs.start_versions_at(term << TERM_SHIFT, ((term + 1) << TERM_SHIFT) - 1)
        try:
            heard, missing = await self._hear(served, required)
            heard.drop_older(deleted_floor(asked.values(), self.lent.terms.deleted_term(owner)))
        except ExportTaken as exc:
            if isinstance(exc, TermTie) and served.takeover:  # a resume yields to a move
                log.warning("export %s: %s; taking a newer term", name, exc)
                return Attempt(retry=True)
            self.records.update(name, size, serving=False)  # a newer server owns it
            raise
        if missing:
            unheard = ", ".join(sorted(missing))
            log.warning("export %s: taken over (forced) without hearing %s", name, unheard)
        new = (
            not served.takeover
            and not (record is not None and record.created)
            and not current
            and heard.empty
            and not missing
        )
        return Attempt(ready=True, missing=missing, heard=heard, new=new)

    def _discovering(self) -> bool:
        """Members are found by mDNS, and the node started too recently to know them all."""
        settle = DISCOVERY_SETTLE * self.config.dead_after
        return bool(self.config.mdns_interface) and time.monotonic() - self._started < settle

    async def _hear(self, served: Served, required: set[str]) -> tuple[Heard, set[str]]:
        """Claim the term taken (`served.term`) and read every inventory, again and again until
        each required node has answered both (or the takeover is forced): what was heard, and
        the required nodes still unheard (only when forced). ExportTaken if a newer term is
        claimed meanwhile (its server serves).

        Once the term is claimed anywhere, the current server is fenced there, so the taker
        never gives up on its own: it waits, as a resumed export does, and serves as soon as it
        has heard them all. The other way, hearing every inventory before the term is taken,
        cannot keep the current server serving: an inventory asked for under a newer term
        raises the holder's claim (fences it) just as a claim does, and whatever the current
        server writes after an inventory was read must be heard again under the new term.
        What a move can check without fencing, that every required node answers (a claim at
        term 0 only asks), it checks first (`_attempt`), and refuses when one is silent."""
        name, size, term = served.spec.name, served.spec.size, served.term
        told = 0.0
        while True:
            taken = await self.claims.take(name, term, size, sorted(self.peers.alive()))
            heard = await self._rebuilder(served).inventories(sorted(taken))
            missing = (required - set(taken)) | (heard.failed & required)
            if not missing or served.force:
                served.waiting = frozenset()
                return heard, missing
            served.waiting = frozenset(missing)
            served.pending.set()
            now = time.monotonic()
            if now - told >= UNHEARD_LOG_EVERY:
                told = now
                log.warning(
                    "export %s: term %d taken (its old server is fenced), not served yet: "
                    "cannot hear %s; served here once they answer",
                    name,
                    term,
                    ", ".join(sorted(missing)),
                )
            await asyncio.sleep(HEAR_RETRY)

    _each = staticmethod(claim_answers)
    """The claim answers of the nodes that answered (the others are left out, and logged)."""

    # -- serving -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the exports' background work (drops, keepalives, repair) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._start_pending()
            for served in self.served.values():
                if served.state == "serving" and served.task is None:
                    served.task = tg.create_task(self._tend(served))
            while True:
                await asyncio.sleep(DELETE_RETRY)
                await self.claims.retry_deletes()

    async def _tend(self, served: Served) -> None:
        """Drops, keepalive claims and repairs of one export until it is fenced or retired."""
        drops = asyncio.create_task(served.fs.spill_forever(), name="export drops")
        try:
            last_claim = last_repair = time.monotonic()
            while True:
                await asyncio.sleep(min(self.config.heartbeat, 0.5))
                now = time.monotonic()
                if served.fs.fenced is not None:
                    self.retire(served.spec.name, served.fs.fenced)
                    return
                if now - last_claim >= KEEPALIVE_EVERY:
                    last_claim = now
                    why = await self._keepalive(served)
                    if why is not None:
                        self.retire(served.spec.name, why)
                        return
                    self._forget_holders(served)
                if now - last_repair >= REPAIR_EVERY:
                    last_repair = now
                    try:
                        await served.fs.repair(self.peers.gone(), self.peers.leaving())
                    except RamsterError as exc:
                        log.warning("export %s: repair failed: %s", served.spec.name, exc)
        finally:
            drops.cancel()
            await asyncio.gather(drops, return_exceptions=True)

    async def _keepalive(self, served: Served) -> str | None:
        """Claim the term again everywhere: why the export is fenced, or None."""
        owner = export_owner(served.spec.name)
        nodes = sorted(self.peers.alive())
        answers = await self._each(
            nodes, lambda n: self.peers.calls.claim(n, owner, served.term, served.spec.size)
        )
        for node, answer in answers.items():
            if not answer.taken:
                return f"{node} knows term {answer.term} by {answer.node}"
        return None

    def _forget_holders(self, served: Served) -> None:
        """Nodes that may hold copies, less the dead ones the index no longer names (their
        copies were repaired elsewhere): a restarted server need not wait for them."""
        indexed = {n for n, pages in served.fs.inventory().items() if pages}
        gone = self.peers.gone() - indexed
        if served.holders.may_hold & gone:
            try:
                served.holders.set_may_hold(served.holders.may_hold - gone)
            except OSError as exc:
                log.warning("export %s: cannot update its record: %s", served.spec.name, exc)

    def retire(self, name: str, why: str) -> None:
        """Stop serving an export here (fenced, moved or deleted): connections are closed."""
        served = self.served.get(name)
        if served is None:
            return
        served.state = "fenced" if why != "deleted" else "deleted"
        served.export.fence(why)
        try:
            self.records.update(name, served.spec.size, serving=False)
        except OSError as exc:
            log.error("export %s: cannot record that it is not served here: %s", name, exc)  # noqa: TRY400
        if self.nbd is not None:
            self.nbd.remove_export(name)
        del self.served[name]
        if served.task is not None and served.task is not asyncio.current_task():
            served.task.cancel()
        self._event("export-fenced", name, why, logging.WARNING)

    # -- operations --------------------------------------------------------------------------------

    async def adopt(self, name: str, size: int, area: int, force: bool = False) -> int:
        """Take an export over: the next term (the old server is fenced), rebuild, serve.

        Refused (ExportTaken) unless every member, the current server included, answers:
        any of them may hold newer copies. `force` takes it over without the silent ones."""
        if self.nbd is None:
            raise ExportTaken("this node serves no NBD (start it with --nbd HOST:PORT)")
        served = self.served.get(name)
        if served is not None and served.waiting and force:
            served.force = True  # taken, waiting for silent nodes: now serve without them
        elif served is not None or name in self.nbd.exports:
            raise ExportTaken(f"export {name} is served here already")
        else:
            known = await self.claims.known_size(name)
            if name in self.served or name in self.nbd.exports:  # a move that came meanwhile
                raise ExportTaken(f"export {name} is being taken over here already")
            spec = ExportSpec(name, size or known, area, REPLICATED)
            export = self.build(spec, self.nbd.config.max_payload, takeover=True, force=force)
            served = self.served[name]
            # Owned by the service, not by this call: once the term is taken the takeover
            # goes on (see _hear) even if the caller stops waiting.
            self._opening[name] = asyncio.get_running_loop().create_future()
            self._spawn(self._adopting(export, self._opening[name]), f"adopt export {name}")
        opening = self._opening.get(name)
        if opening is None:
            return served.term  # served meanwhile
        # A forced move waits until it serves; an unforced one answers once it is known to wait.
        waiting: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.Event().wait() if served.force else served.pending.wait()
        )
        either: set[asyncio.Future[Any]] = {opening, waiting}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if opening.done():
            opening.result()  # ExportTaken: refused before any term was taken
            return served.term
        opening.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        raise ExportPending(
            f"export {name}: taken over here under term {served.term} (its old server is "
            f"fenced) but not served yet: cannot hear {', '.join(sorted(served.waiting))}, "
            "which may hold newer copies; it is served here as soon as they answer "
            "(`ramster export move --force` to this node serves it without them)"
        )

    async def _adopting(self, export: Export, outcome: asyncio.Future[None]) -> None:
        """Open an export taken over; its outcome (served, or why not) goes to `outcome`."""
        name = export.spec.name
        try:
            assert self.nbd is not None
            await self.nbd.add_export(export)
        except Exception as exc:  # the outcome carries it to the move's caller
            log.warning("export %s: not taken over: %s", name, exc)
            if not outcome.done():
                outcome.set_exception(exc)
        else:
            if not outcome.done():
                outcome.set_result(None)
        finally:
            if not outcome.done():
                outcome.cancel()
            if self._opening.get(name) is outcome:
                del self._opening[name]

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = (
            self._tg.create_task(work, name=name)
            if self._tg is not None
            else asyncio.create_task(work, name=name)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def delete(self, name: str) -> int:
        """Forget an export cluster-wide: fence its server, drop every copy; pages dropped."""
        if name in self.served:
            self.retire(name, "deleted")
        return await self.claims.delete(name)

    def holder_restarted(self, node: str, old_incarnation: str) -> None:
        """A holder restarted: its copies of every export are gone."""
        for served in self.served.values():
            served.fs.holder_restarted(node, old_incarnation)

    def describe(self) -> list[dict[str, Any]]:
        """The exports served here, as plain data."""
        gone, leaving = self.peers.gone(), self.peers.leaving()
        return [describe(s, self.peers.me, gone, leaving) for _, s in sorted(self.served.items())]
