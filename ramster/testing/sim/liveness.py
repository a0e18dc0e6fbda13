"""Liveness after healing: everyone sees everyone, repairs finished, holders keep exactly what
owners reference, and no connection lost a call slot for good."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ramster.rpc.connection import ClientConnection

if TYPE_CHECKING:
    from ramster.testing.sim.cluster import SimNode
    from ramster.testing.sim.run import Simulation

ATTEMPTS = 6
PAUSE = 5.0
REPAIR_BATCH = 256
"""SpillConfig.repair_batch_pages."""
INDEX_SLACK = 8 << 10
"""Room a holder's index may need for a new owner's area besides the page itself (free_bytes
does not count it: with the simulation's tiny lent budgets a holder can report room it lacks)."""


async def check_liveness(sim: Simulation) -> str | None:
    """None when healthy; else the first problem that lasted through every attempt."""
    problem: str | None = None
    leaks: dict[int, int] = {}
    for attempt in range(ATTEMPTS):
        problem = _problem(sim, leaks, attempt)
        if problem is None:
            return None
        await asyncio.sleep(PAUSE)
    return problem


def _problem(sim: Simulation, leaks: dict[int, int], attempt: int) -> str | None:
    nodes = [n for n in sim.cluster.nodes if n.node is not None and n.serving]
    names = {n.name for n in nodes}
    for n in nodes:
        assert n.node is not None
        for peer in n.node.peers.peers():
            for conn in peer.client._conns:
                leaked = leaked_slots(conn)
                # A slot may be in hand-over at any instant; one lost for good stays lost.
                if leaked:
                    leaks[id(conn)] = leaks.get(id(conn), 0) + 1
                    if leaks[id(conn)] >= ATTEMPTS - 1:
                        return (
                            f"liveness: {n.name}'s connection to {peer.node_id} lost {leaked} of "
                            f"{conn._config.max_in_flight} call slots for good (bug 6)"
                        )
    for n in nodes:
        assert n.node is not None
        seen = n.node.peers.alive()
        if seen != names - {n.name}:
            return (
                f"liveness: {n.name} sees {sorted(seen)} alive, expected {sorted(names - {n.name})}"
            )
    for n in nodes:
        assert n.node is not None
        stuck = _repairable(n, nodes)
        if stuck:
            return f"liveness: {n.name} has under-replicated pages after healing: {stuck}"
    for owner in nodes:
        assert owner.node is not None
        refs = owner.node.tier.inventory()
        for holder in nodes:
            assert holder.node is not None
            held = holder.node.lent.pages_by_owner().get(owner.name, 0)
            if held != refs.get(holder.name, 0):
                lent = holder.node.lent
                runs = {
                    inc: lent.pool.area_pages(ident)
                    for (who, inc, _), ident in lent._ids.items()
                    if who == owner.name
                }
                return (
                    f"liveness: {holder.name} holds {held} pages of {owner.name}, "
                    f"which references {refs.get(holder.name, 0)} there (held per incarnation: "
                    f"{runs}; the owner's is {owner.node.incarnation})"
                )
    return None


def _repairable(n: SimNode, nodes: list[SimNode]) -> str | None:
    """A set of holders short of copies for which some other node has room: what repair
    should have fixed.

    Repair asks a holder for half a raw page of room per page it copies (an estimate made
    before the copies are read), whatever they compress to.
    """
    assert n.node is not None
    fs = n.node.tier
    if fs.remote_statistics().get("pages_lost", 0):
        return None  # pages that lost every holder stay counted: nothing can repair them
    repairer = fs._repairer
    counts = fs.pool.remote_set_counts()
    for set_id in repairer._needing(n.node.peers.gone(), set()):
        pages = counts.get(set_id, 0)
        if not pages:
            continue
        holders = set(fs.holder_set(set_id))
        need = min(pages, REPAIR_BATCH) * n.node.config.page_size // 2 + INDEX_SLACK
        room = {
            m.name: m.node.lent.free_bytes()
            for m in nodes
            if m.node is not None and m is not n and m.name not in holders
        }
        if any(free >= need for free in room.values()):
            return f"{pages} pages on {sorted(holders)}, free lent bytes elsewhere: {room}"
    return None


def leaked_slots(conn: ClientConnection) -> int:
    """Call slots of an open connection neither free nor held by a call in flight."""
    if not conn.is_open:
        return 0
    busy = len(conn._pending)
    return max(0, conn._config.max_in_flight - conn._free_slots - busy)
