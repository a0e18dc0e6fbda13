"""Electing the coordinator. Pure logic: no I/O, no clock.

The coordinator is the live member with the lowest node id. Every node runs `Election`; what it
believes travels in heartbeats as (coordinator, term). A node that sees the coordinator change
moves to a term above every term it has seen, so that terms rise with every change and views
converge on the highest term; orders carrying an older term are ignored (`accepts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


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

    def update(self, alive: Iterable[str], peer_views: Mapping[str, View]) -> View | None:
        """Recompute from live members and the views peers announced; the new view if changed."""
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
        # A higher term means this node has not heard of the new coordinator yet.
        return term > self.view.term

    @property
    def is_coordinator(self) -> bool:
        """True when this node coordinates."""
        return self.view.coordinator == self.me
