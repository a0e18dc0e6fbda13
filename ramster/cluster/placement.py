"""Where spilled pages go: R distinct holders, weighted by free lent capacity. Pure logic."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ramster.types import NodeId


@dataclass(frozen=True, slots=True)
class Candidate:
    """A peer that could hold pages, as the owner last heard of it."""

    node: NodeId
    free_bytes: int
    """Lent capacity the peer reports as free, in bytes."""


def _weighted_pick(pool: list[Candidate], rng: random.Random) -> Candidate:
    total = sum(c.free_bytes for c in pool)
    point = rng.random() * total
    for c in pool:
        point -= c.free_bytes
        if point < 0:
            return c
    return pool[-1]


def choose_holders(
    candidates: Sequence[Candidate],
    replicas: int,
    need_bytes: int,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
    minimum: int | None = None,
) -> list[NodeId]:
    """`replicas` distinct holders with room for `need_bytes`; fewer (down to `minimum`,
    default `replicas`) when fewer have room, or [] below that (degraded placement).

    Each pick is a power of two choices: two candidates drawn with probability proportional to
    their free capacity, and the freer of the two wins. That keeps the fullest peers from
    being chosen while spreading load more evenly than always taking the emptiest.
    """
    if replicas <= 0:
        raise ValueError(f"replicas must be positive, got {replicas}")
    least = replicas if minimum is None else minimum
    if not 1 <= least <= replicas:
        raise ValueError(f"minimum must be within 1..{replicas}, got {minimum}")
    pool = [c for c in candidates if c.free_bytes >= need_bytes and c.node not in exclude]
    if len(pool) < least:
        return []
    chosen: list[NodeId] = []
    for _ in range(min(replicas, len(pool))):
        first = _weighted_pick(pool, rng)
        second = _weighted_pick(pool, rng)
        best = first if first.free_bytes >= second.free_bytes else second
        chosen.append(best.node)
        pool = [c for c in pool if c.node != best.node]
    return chosen
