"""A hostile member: a node of the cluster (it has the secret) that acts for another.

It calls other nodes' holder methods naming a victim owner: copies under a made-up newer
incarnation (which would bury the victim's pages there and lock it out), forged newer versions
of the victim's keys under its real incarnation (which would replace good copies), copies for
owners that do not exist (which would grow the owner table), and the victim's own orders,
drops and area drops. Every one must be refused and harm nothing: the dict model catches what a
forged call changed, and `check_identities` what it created or advanced.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ramster.errors import RamsterError
from ramster.pagestore.codec import checksum
from ramster.pagestore.owners import incarnation_order, is_export
from ramster.protocol import HOLD_DROP, HOLD_DROP_AREA, HOLD_EXPECT, HOLD_PUT, HOLD_PUT_COPY
from ramster.rpc import Identity, KeyKind, Keys, PageBatch, RpcClient, Secret
from ramster.testing.sim.cluster import SimNode

ATTACKS = ("newer-incarnation", "forged-versions", "made-up-owner", "victim-orders", "outsider")
OUTSIDER_SECRET = Secret(b"not-the-cluster-secret-0123456789", KeyKind.CLUSTER)
"""An outsider's key: it knows the protocol and the node names, not the cluster's secret."""
FORGED_VERSION = 1 << 39
"""A version above any the simulated owners reach: a forged copy would win newest-wins."""


@dataclass
class Attack:
    """One forged call: who sends it, to whom, what."""

    kind: str
    attacker: str
    target: str
    victim: str
    calls: list[tuple[str, list[object]]] = field(default_factory=list)
    outsider: bool = False
    """Sent without the cluster's secret, over a connection of its own."""
    victim_incarnation: str = ""

    def describe(self) -> str:
        """For the trace."""
        return f"hostile {self.attacker} -> {self.target}: {self.kind} as {self.victim}"


def plan(rng: random.Random, nodes: list[SimNode], keys: int, area: int) -> list[Attack]:
    """Draw one attack: one forged call (or a few) to every other running node at once, so that
    a victim's every copy is hit (one holder alone would be repaired around)."""
    running = [n for n in nodes if n.serving and n.node is not None]
    if len(running) < 2:
        return []
    attacker = rng.choice(running)
    victims = [n for n in nodes if n is not attacker and n.node is not None]
    victim = rng.choice(victims)
    assert victim.node is not None
    kind = rng.choice(ATTACKS)
    inc = victim.node.incarnation
    newer = f"{incarnation_order(inc) + rng.randrange(1, 1 << 30):x}-{rng.randbytes(4).hex()}"
    offsets = sorted(rng.sample(range(keys), min(keys, rng.choice((1, 4, 16)))))
    forged = [rng.randbytes(32) * (4096 // 32) for _ in offsets]
    out = []
    for target in running:
        if target is attacker or target is victim:
            continue
        attack = Attack(kind, attacker.name, target.name, victim.name, victim_incarnation=inc)
        if kind == "newer-incarnation":
            attack.calls.append(
                (HOLD_PUT_COPY, [victim.name, newer, _batch(area, offsets, 1, forged)])
            )
        elif kind == "forged-versions":
            batch = _batch(area, offsets, FORGED_VERSION, forged)
            attack.calls.append((HOLD_PUT_COPY, [victim.name, inc, batch]))
        elif kind == "made-up-owner":
            ghost = f"ghost{rng.randrange(1 << 20)}"
            ghost_inc = f"{incarnation_order(inc):x}-{rng.randbytes(4).hex()}"
            attack.calls.append(
                (HOLD_PUT_COPY, [ghost, ghost_inc, _batch(area, offsets, 1, forged)])
            )
            attack.calls.append((HOLD_PUT_COPY, [ghost, ghost_inc, PageBatch.of([]).to_wire()]))
        elif kind == "outsider":  # no secret: it claims to be the victim itself
            attack.outsider = True
            wire_keys = Keys([area] * len(offsets), offsets).to_wire()
            attack.calls.append((HOLD_DROP_AREA, [victim.name, inc, area, FORGED_VERSION]))
            attack.calls.append(
                (HOLD_PUT, [victim.name, inc, _batch(area, offsets, FORGED_VERSION, forged)])
            )
            attack.calls.append(
                (HOLD_DROP, [victim.name, inc, wire_keys, [FORGED_VERSION] * len(offsets)])
            )
        else:  # the victim's own orders, then the copy they would let in, and its drops
            wire_keys = Keys([area] * len(offsets), offsets).to_wire()
            sums = [checksum(p) for p in forged]
            versions = [FORGED_VERSION] * len(offsets)
            attack.calls.append((HOLD_EXPECT, [victim.name, inc, wire_keys, versions, sums]))
            attack.calls.append(
                (HOLD_PUT_COPY, [victim.name, inc, _batch(area, offsets, FORGED_VERSION, forged)])
            )
            attack.calls.append(
                (HOLD_PUT, [victim.name, inc, _batch(area, offsets, FORGED_VERSION, forged)])
            )
            attack.calls.append((HOLD_DROP, [victim.name, inc, wire_keys, versions]))
            attack.calls.append((HOLD_DROP_AREA, [victim.name, inc, area, FORGED_VERSION]))
        out.append(attack)
    return out


def _batch(area: int, offsets: list[int], version: int, pages: list[bytes]) -> list[object]:
    return PageBatch.of(
        (area, off, version, checksum(page), page) for off, page in zip(offsets, pages, strict=True)
    ).to_wire()


async def send(
    attacker: SimNode,
    attack: Attack,
    note: Callable[[str], None],
    failures: list[str],
    address: tuple[str, int],
) -> None:
    """Make the forged calls over the attacker's own authenticated connection to the target
    (an outsider: over its own connection, without the secret, claiming the victim's name)."""
    assert attacker.node is not None
    if attack.outsider:
        identity = Identity.node(attack.victim, attack.victim_incarnation)
        outsider = RpcClient(*address, OUTSIDER_SECRET, identity=identity)
        try:
            async with outsider:
                for method, params in attack.calls:
                    await outsider.call(method, params, timeout=2.0)
                    failures.append(f"{attack.describe()}: {method} was answered (invariant 6)")
        except RamsterError as exc:
            note(f"{attack.describe()}: refused: {type(exc).__name__}")
        return
    try:
        client = attacker.node.peers.client_of(attack.target)
    except RamsterError:
        return
    for method, params in attack.calls:
        try:
            result = await client.call(method, params, timeout=2.0)
        except RamsterError as exc:
            note(f"{attack.describe()}: {method} refused: {type(exc).__name__}: {str(exc)[:80]}")
        else:
            note(f"{attack.describe()}: {method} answered {_short(result)}")


def _short(result: object) -> str:
    text = repr(result)
    return text if len(text) < 60 else text[:57] + "..."


def check_identities(nodes: list[SimNode], used: dict[str, set[str]]) -> str | None:
    """Only an owner creates or advances its own identity: every node owner a holder knows is a
    simulated node, at an incarnation that node really ran (exports are checked elsewhere)."""
    for n in nodes:
        if not n.up or n.node is None:
            continue
        for owner, inc in n.node.lent.owner_incarnations().items():
            if is_export(owner):
                continue
            if inc not in used.get(owner, set()):
                return (
                    f"{n.name} records {owner} at incarnation {inc}, which {owner} never ran "
                    f"(a member acted for another: bug 4)"
                )
    return None
