"""How a replicated export starts serving here (the term protocol): hear every node that may
hold newer copies, take the export's next term, rebuild its index from the holders; once it
serves, the keeper (`export_keeper`) tends it.

A replicated export has a frontswap of its own (`RemoteTier(replicated=True)`): its pages
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
from collections.abc import Callable

from ramster.cluster.exports import export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportDoesNotFit, ExportTaken
from ramster.node.config import NodeConfig
from ramster.node.export_claims import ExportClaims
from ramster.node.export_keeper import ExportKeeper
from ramster.node.export_rebuild import DATA_AREA, Heard, Rebuilder
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import (
    DISCOVERY_SETTLE,
    HEAR_RETRY,
    UNHEARD_LOG_EVERY,
    Attempt,
    ExportState,
    Served,
    TermTie,
    capacity_of,
    deleted_floor,
    fenced_here,
    required_nodes,
)
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import MAX_EXPORT_TERM, TERM_SHIFT

log = logging.getLogger(__name__)


class ExportOpener:
    """The `export_served.ServedHooks` of the node's replicated exports: each is opened (heard,
    claimed, rebuilt) here, then handed to the keeper."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        lent: LentPool,
        records: ExportRecords,
        claims: ExportClaims,
        served: dict[str, Served],
        keeper: ExportKeeper,
        events: Callable[[str, str, str, int], object],
    ) -> None:
        self.config = config
        self.peers = peers
        self.lent = lent
        self.records = records
        self.claims = claims
        self.served = served
        """The node's replicated exports by name (shared with the export service)."""
        self.keeper = keeper
        self._event = events
        self._started = time.monotonic()

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
        served.state = ExportState.HEARING
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
        served.state = ExportState.REBUILDING
        log.info("export %s: term %d, rebuilding from the holders", name, served.term)
        await served.export.open_areas()
        t0 = time.monotonic()
        if attempt.new:
            # Known new (see _attempt): recorded as created before its first page is stored.
            self.records.update(name, served.spec.size, created=True)
        rebuilt, written, lost, unstored = await rebuilder.rebuild(attempt.heard, attempt.new)
        self.records.update(name, served.spec.size, created=True)
        served.export.restore_index(written, lost, rebuilder.manifest_slots)
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
        served.state = ExportState.SERVING
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
        room = capacity_of(served)
        if not room.fits:
            # Served all the same: a refusal is for an operator to ask for (issue 24).
            self._event("export-oversized", name, room.warning(), logging.WARNING)
        self.keeper.tend(served)

    def fenced(self, served: Served) -> str | None:
        """Why the export is fenced (see `export_served.fenced_here`), or None."""
        return fenced_here(served, self.lent, self.peers.me)

    def _rebuilder(self, served: Served) -> Rebuilder:
        owner, inc = served.holders.owner_identity
        spec, ps = served.spec, self.config.page_size
        return Rebuilder(self.peers, self.lent, ps, spec.name, spec.size, served.tier, owner, inc)

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
        if not served.takeover and max(newest_term, mine) == 0:
            self._refuse_oversized(served)  # never claimed anywhere: it would be created now
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
        served.tier.start_versions_at(term << TERM_SHIFT, ((term + 1) << TERM_SHIFT) - 1)
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

    def _refuse_oversized(self, served: Served) -> None:
        """ExportDoesNotFit (and an export-refused event) when a new export cannot fit in what
        the cluster can hold for it now and the export or the node asks for a refusal: before
        any term is taken or recorded, so that nothing is created. Advisory: holders may come,
        go or change their budgets a moment later."""
        if not (served.spec.must_fit or self.config.refuse_oversized_exports):
            return
        room = capacity_of(served)
        if room.fits:
            return
        why = room.refusal(served.spec.name)
        self._event("export-refused", served.spec.name, why, logging.WARNING)
        raise ExportDoesNotFit(why)

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
