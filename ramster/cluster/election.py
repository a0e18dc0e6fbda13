"""Electing the coordinator. Pure logic: no I/O, no clock.

The coordinator is the live member with the lowest node id. Every node runs `Election`; what it
believes travels in heartbeats as (coordinator, term). A node that sees the coordinator change
moves to a term above every term it has seen, so that terms rise with every change and views
converge on the highest term; orders carrying an older term are ignored (`accepts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_TERM = 1 << 48
"""Terms at or above this are refused: a peer announcing a term near 2^64 would otherwise
leave no term to rise to (and overflow the wire)."""
MAX_TERM_JUMP = 1 << 16
"""A view whose term is this far above every other view (and this node's) is an absurd jump,
ignored: one peer must not drag the cluster's term anywhere it likes."""


@dataclass(frozen=True, slots=True)
class View:
    """Who coordinates, in which term."""

    coordinator: str
    term: int


class Election:
    """One node's view of the coordinator, updated from membership and peers' views."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.view = View(me, 0)
        self.refused_views = 0
        """Peer views ignored for an out-of-range term or an absurd jump."""

    def sane(self, peer_views: Mapping[str, View]) -> dict[str, View]:
        """The views worth believing: terms in range and not far above all the others."""
        views = {n: v for n, v in peer_views.items() if 0 <= v.term < MAX_TERM}
        terms = sorted([self.view.term, *(v.term for v in views.values())])
        second = terms[-2] if len(terms) > 1 else terms[-1]
        ceiling = max(self.view.term, second) + MAX_TERM_JUMP
        out = {n: v for n, v in views.items() if v.term <= ceiling}
        self.refused_views += len(peer_views) - len(out)
        return out

    def update(self, alive: Iterable[str], peer_views: Mapping[str, View]) -> View | None:
        """Recompute from live members and the views peers announced; the new view if changed."""
        peer_views = self.sane(peer_views)
        members = {self.me, *alive}
        candidate = min(members)
        seen = max([self.view.term, *(v.term for v in peer_views.values())])
        # A live peer that already names the same coordinator at a higher term settles it.
        agreed = [
            v.term for n, v in peer_views.items() if n in members and v.coordinator == candidate
        ]
        if candidate == self.view.coordinator:
            term = max([self.view.term, *agreed])
        elif seen in agreed:
            term = seen  # join the view others already hold, at the highest term there is
        else:
            # A change of coordinator moves above every term seen: a newcomer's own view of
            # itself at term 0 is no agreement.
            term = seen + 1
        new = View(candidate, term)
        if new == self.view:
            return None
        self.view = new
        return new

    def accepts(self, term: int, coordinator: str) -> bool:
        """Whether an order may be followed: a newer term, or this term from its coordinator."""
        if term == self.view.term:
            return coordinator == self.view.coordinator
        # A higher term means this node has not heard of the new coordinator yet (within reason).
        return self.view.term < term <= self.view.term + MAX_TERM_JUMP and term < MAX_TERM

    @property
    def is_coordinator(self) -> bool:
        """True when this node coordinates."""
        return self.view.coordinator == self.me
