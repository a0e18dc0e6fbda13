"""The node's small background loops; each is a task of the node's TaskGroup."""

from __future__ import annotations

import asyncio
import time

from ramster.cluster.election import Election, View
from ramster.cluster.peers import Peers
from ramster.pagestore.lent import LentPool
from ramster.telemetry.events import EventLog


async def elect_forever(
    election: Election, peers: Peers, events: EventLog, heartbeat: float
) -> None:
    """Follow who coordinates: the lowest live node id, with terms that only rise."""
    while True:
        await asyncio.sleep(min(0.1, heartbeat))
        alive = peers.alive()
        views: dict[str, View] = {
            p.node_id: View(str(p.info["coordinator"]), int(p.info["term"]))
            for p in peers.peers()
            if p.node_id in alive and "coordinator" in p.info and "term" in p.info
        }
        new = election.update(alive, views)
        if new is not None:
            events.add("coordinator", new.coordinator, f"term {new.term}")


RECLAIM_PAUSE = 0.005
"""Seconds between two steps of freeing a forgotten owner's pages: RPCs run in between."""


async def reclaim_forever(
    lent: LentPool, heartbeat: float, owner_grace: float, export_grace: float = 0.0
) -> None:
    """Forget the pages of owners silent for longer than owner_grace (exports: export_grace),
    and free forgotten owners' pages a bounded step at a time."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(RECLAIM_PAUSE if lent.reclaim_pending() else heartbeat)
        lent.reclaim_step()
        now = time.monotonic()
        if now - last >= heartbeat:
            last = now
            lent.reclaim_silent(now, owner_grace)
            lent.reclaim_exports(export_grace)
