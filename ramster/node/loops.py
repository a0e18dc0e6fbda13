"""The node's small background loops; each is a task of the node's TaskGroup."""

from __future__ import annotations

import asyncio
import time

from ramster.cluster.election import Election, View
from ramster.cluster.peers import Peers
from ramster.frontswap.remote import ClusterFrontswap
from ramster.pagestore.lent import LentPool
from ramster.telemetry.events import EventLog


async def elect_forever(
    election: Election, peers: Peers, events: EventLog, heartbeat: float
) -> None:
    """Follow who coordinates: the lowest live node id, with terms that only rise."""
    while True:
        await asyncio.sleep(min(0.1, heartbeat))
        alive = peers.alive()
        views = {
            p.node_id: View(str(p.info["coordinator"]), int(p.info["term"]))
            for p in peers.peers()
            if p.node_id in alive and "coordinator" in p.info and "term" in p.info
        }
        new = election.update(alive, views)
        if new is not None:
            events.add("coordinator", new.coordinator, f"term {new.term}")


async def reclaim_forever(lent: LentPool, heartbeat: float, owner_grace: float) -> None:
    """Drop the pages of owners silent for longer than owner_grace."""
    while True:
        await asyncio.sleep(heartbeat)
        lent.reclaim_silent(time.monotonic(), owner_grace)


async def orphans_forever(frontswap: ClusterFrontswap, peers: Peers, heartbeat: float) -> None:
    """Drop the copies re-replicated away from holders that answer again."""
    while True:
        await asyncio.sleep(heartbeat)
        if frontswap.orphans_pending():
            await frontswap.drop_orphans(peers.alive())
