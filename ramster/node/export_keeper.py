"""What keeps a replicated export served here alive until it is fenced or retired: its drops,
keepalive claims on every live member and repairs, and its retirement (connections closed)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ramster.cluster.exports import export_owner
from ramster.cluster.peers import Peers
from ramster.errors import RamsterError
from ramster.nbd.server import NbdServer
from ramster.node.config import NodeConfig
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import (
    KEEPALIVE_EVERY,
    REPAIR_EVERY,
    ExportState,
    Served,
    claim_answers,
)

log = logging.getLogger(__name__)


class ExportKeeper:
    """Tends the replicated exports served here in the export service's TaskGroup, and retires
    them."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        records: ExportRecords,
        served: dict[str, Served],
        nbd: NbdServer | None,
        events: Callable[[str, str, str, int], object],
    ) -> None:
        self.config = config
        self.peers = peers
        self.records = records
        self.served = served
        """The node's replicated exports by name (shared with the export service)."""
        self.nbd = nbd
        self._event = events
        self._tg: asyncio.TaskGroup | None = None

    def tend_in(self, tg: asyncio.TaskGroup) -> None:
        """Tend the exports serving now, and each that serves from now on, in tg (the export
        service's, while it runs)."""
        self._tg = tg
        for served in self.served.values():
            if served.state is ExportState.SERVING and served.task is None:
                served.task = tg.create_task(self._tend(served))

    def tend(self, served: Served) -> None:
        """Tend an export that serves now (once `tend_in` gave a TaskGroup; until then, it
        tends the exports serving by then)."""
        if self._tg is not None:
            name = served.spec.name
            served.task = self._tg.create_task(self._tend(served), name=f"export {name}")

    async def _tend(self, served: Served) -> None:
        """Drops, keepalive claims and repairs of one export until it is fenced or retired."""
        drops = asyncio.create_task(served.tier.spill_forever(), name="export drops")
        try:
            last_claim = last_repair = time.monotonic()
            while True:
                await asyncio.sleep(min(self.config.heartbeat, 0.5))
                now = time.monotonic()
                if served.tier.fenced is not None:
                    self.retire(served.spec.name, served.tier.fenced)
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
                        await served.tier.repair(self.peers.gone(), self.peers.leaving())
                    except RamsterError as exc:
                        log.warning("export %s: repair failed: %s", served.spec.name, exc)
        finally:
            drops.cancel()
            await asyncio.gather(drops, return_exceptions=True)

    _each = staticmethod(claim_answers)
    """The claim answers of the nodes that answered (the others are left out, and logged)."""

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
        indexed = {n for n, pages in served.tier.inventory().items() if pages}
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
        served.state = ExportState.DELETED if why == "deleted" else ExportState.FENCED
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
