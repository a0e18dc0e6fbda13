"""Liveness after healing: everyone sees everyone, repairs finished, holders keep exactly what
owners reference, and no connection lost a call slot for good."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ramster.rpc.connection import ClientConnection

if TYPE_CHECKING:
    from ramster.testing.sim.run import Simulation

ATTEMPTS = 6
PAUSE = 5.0
REPAIR_BATCH = 256
"""SpillConfig.repair_batch_pages."""


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
                leaked = _leaked_slots(conn)
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
        under = n.node.frontswap.under_replicated(n.node.peers.gone())
        room = {
            m.name: m.node.lent.free_bytes() for m in nodes if m is not n and m.node is not None
        }
        # Repairs wait for capacity (invariant 7): only with room somewhere must they finish.
        # Repair asks a holder for half a raw page of room per page it copies (an estimate
        # made before the copies are read), whatever they compress to.
        need = min(under, REPAIR_BATCH) * n.node.config.page_size // 2
        lost = n.node.frontswap.remote_statistics().get("pages_lost", 0)
        # Pages that lost every holder stay counted (nothing can repair them).
        if under and not lost and max(room.values(), default=0) >= need:
            return (
                f"liveness: {n.name} has {under} under-replicated pages after healing "
                f"(free lent bytes: {room})"
            )
    for owner in nodes:
        assert owner.node is not None
        refs = owner.node.frontswap.inventory()
        for holder in nodes:
            assert holder.node is not None
            held = holder.node.lent.pages_by_owner().get(owner.name, 0)
            if held != refs.get(holder.name, 0):
                return (
                    f"liveness: {holder.name} holds {held} pages of {owner.name}, "
                    f"which references {refs.get(holder.name, 0)} there"
                )
    return None


def _leaked_slots(conn: ClientConnection) -> int:
    if not conn.is_open:
        return 0
    busy = len(conn._pending)
    return max(0, conn._config.max_in_flight - conn._free_slots - busy)
