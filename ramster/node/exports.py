"""The exports a node serves, as the node and its control calls see them: the command line's
and the resumed ones, moves here (`adopt`), deletion and description.

A replicated export hears the nodes that may hold its copies, takes a term, rebuilds its index
from the holders (`export_open`), is kept alive, repaired and, once another server takes it
over, fenced and retired (`export_keeper`). The service composes one part per job: the
factory builds exports (`export_factory`), the claims take terms across the cluster
(`export_claims`), and `export_served` keeps what is known of each export served here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ramster.cluster.peers import Peers
from ramster.errors import ExportPending, ExportTaken, RamsterError
from ramster.frontswap.local import LocalFrontswap
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.nbd.export import Export
from ramster.nbd.server import NbdServer
from ramster.node.config import NodeConfig
from ramster.node.export_claims import DELETE_RETRY, ExportClaims
from ramster.node.export_factory import ExportFactory
from ramster.node.export_keeper import ExportKeeper
from ramster.node.export_open import ExportOpener
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import Served, describe
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import MAX_EXPORT_TERM, TERM_SHIFT
from ramster.types import Incarnation, NodeId

log = logging.getLogger(__name__)

__all__ = ["DATA_AREA", "MANIFEST_AREA", "MAX_EXPORT_TERM", "TERM_SHIFT", "ExportService"]


class ExportService:
    """The node's exports (local ones over the node's frontswap, replicated ones each over its
    own); `run()` is owned by the node's TaskGroup."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        frontswap: LocalFrontswap,
        events: Callable[[str, str, str, int], object],
        lent: LentPool,
        records: ExportRecords,
        nbd: NbdServer | None,
    ) -> None:
        self.records = records
        """What this node remembers of its exports across restarts (terms, creation)."""
        self.peers = peers
        self.served: dict[str, Served] = {}
        """The replicated exports served here (or being opened), by name; shared by the parts."""
        self.nbd = nbd
        """Where exports are served (None: the node serves no NBD)."""
        self._tg: asyncio.TaskGroup | None = None
        self._pending: list[str] = []  # exports to resume once run() owns a TaskGroup
        self._opening: dict[str, asyncio.Future[None]] = {}
        """Takeovers under way: how each ends (a move's answer may come before it serves)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.claims = ExportClaims(peers, lent, records, events)
        """Terms across the cluster: asking, taking, sizes, deletions."""
        self.keeper = ExportKeeper(config, peers, records, self.served, nbd, events)
        """Keepalives, repairs and retirement of the exports served here."""
        self.opener = ExportOpener(
            config, peers, lent, records, self.claims, self.served, self.keeper, events
        )
        """The term protocol: hear, claim, rebuild before an export serves."""
        self.factory = ExportFactory(config, peers, frontswap, records, self.served, self.opener)
        """Builds the exports (a replicated one opens through the opener)."""

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
        except RamsterError as exc:
            # Moved away or deleted meanwhile, or its holders refuse: never the node's end.
            log.warning("export %s: not resumed: %s", name, exc)
        else:
            log.info("export %s: resumed here (this node served it when it stopped)", name)

    # -- serving -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the exports' background work (drops, keepalives, repair) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._start_pending()
            self.keeper.tend_in(tg)
            while True:
                await asyncio.sleep(DELETE_RETRY)
                await self.claims.retry_deletes()

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

    def build(
        self, spec: ExportSpec, max_payload: int, *, takeover: bool = False, force: bool = False
    ) -> Export:
        """The Export for a spec: over the node's frontswap (local) or one of its own."""
        return self.factory.build(spec, max_payload, takeover=takeover, force=force)

    def retire(self, name: str, why: str) -> None:
        """Stop serving an export here (fenced, moved or deleted): connections are closed."""
        self.keeper.retire(name, why)

    def holder_restarted(
        self, node: NodeId, old_incarnation: Incarnation, new: Incarnation
    ) -> None:
        """A holder restarted: its copies of every export are gone."""
        for served in self.served.values():
            served.tier.holder_restarted(node, old_incarnation, new)

    def describe(self) -> list[dict[str, Any]]:
        """The exports served here, as plain data."""
        gone, leaving = self.peers.gone(), self.peers.leaving()
        return [describe(s, self.peers.me, gone, leaving) for _, s in sorted(self.served.items())]
