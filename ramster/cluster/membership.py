"""Failure detection as a pure state machine: alive, suspect, dead; no I/O, no clocks of its own.

The driver feeds it what happened (`heartbeat_ok(node, incarnation, now)`) and the time
(`tick(now)`), and acts on the transitions it returns. A paused process, a cut link and a crash
all look the same here: silence. Flapping is damped: a node that died `flap_limit` times within
`flap_window` seconds must answer `damped_beats` heartbeats in a row before it counts again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ramster.types import Incarnation, NodeId


class State(enum.Enum):
    """What a member is believed to be."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Timeouts in seconds; counts in heartbeats."""

    suspect_after: float = 1.5
    dead_after: float = 3.0
    rejoin_beats: int = 2
    """Heartbeats in a row a dead member must answer before it is alive again."""
    flap_window: float = 60.0
    flap_limit: int = 3
    damped_beats: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.suspect_after < self.dead_after:
            raise ValueError("need 0 < suspect_after < dead_after")
        if self.rejoin_beats < 1 or self.damped_beats < self.rejoin_beats:
            raise ValueError("need 1 <= rejoin_beats <= damped_beats")


@dataclass(frozen=True, slots=True)
class Transition:
    """A member changed state (old is None for a member seen for the first time)."""

    node: NodeId
    old: State | None
    new: State
    incarnation: Incarnation
    reason: str
    successor: Incarnation = Incarnation("")
    """For a restart: the incarnation that took the old one's place."""


@dataclass(slots=True)
class _Member:
    state: State
    incarnation: Incarnation
    last_ok: float
    streak: int = 0
    deaths: list[float] = field(default_factory=list)


class Membership:
    """Members and their states, updated only by the events it is given."""

    def __init__(self, config: MembershipConfig | None = None) -> None:
        self.config = config or MembershipConfig()
        self._members: dict[NodeId, _Member] = {}

    def heartbeat_ok(self, node: NodeId, incarnation: Incarnation, now: float) -> list[Transition]:
        """A member answered a heartbeat."""
        cfg = self.config
        m = self._members.get(node)
        if m is None:
            self._members[node] = _Member(State.ALIVE, incarnation, now, streak=1)
            return [Transition(node, None, State.ALIVE, incarnation, "first heartbeat")]
        out: list[Transition] = []
        if m.incarnation != incarnation:
            # A restart: the old incarnation is dead whatever the timers say. Said even when
            # silence had made it dead already: whoever kept copies there must learn that they
            # are gone, not take the new incarnation for the old one come back.
            out.append(
                Transition(node, m.state, State.DEAD, m.incarnation, "restarted", incarnation)
            )
            if m.state is not State.DEAD:
                m.deaths.append(now)
            m.incarnation = incarnation
            m.state = State.DEAD
            m.streak = 0
        m.streak = m.streak + 1 if now - m.last_ok <= cfg.suspect_after else 1
        m.last_ok = now
        if m.state is State.SUSPECT:
            m.state = State.ALIVE
            out.append(Transition(node, State.SUSPECT, State.ALIVE, incarnation, "answered"))
        elif m.state is State.DEAD and m.streak >= self._beats_needed(m, now):
            m.state = State.ALIVE
            out.append(Transition(node, State.DEAD, State.ALIVE, incarnation, "rejoined"))
        return out

    def _beats_needed(self, m: _Member, now: float) -> int:
        cfg = self.config
        m.deaths = [t for t in m.deaths if now - t <= cfg.flap_window]
        return cfg.damped_beats if len(m.deaths) >= cfg.flap_limit else cfg.rejoin_beats

    def tick(self, now: float) -> list[Transition]:
        """Let time pass: silent members become suspect, then dead."""
        cfg = self.config
        out = []
        for node, m in self._members.items():
            silent = now - m.last_ok
            if m.state is State.ALIVE and silent >= cfg.suspect_after:
                m.state = State.SUSPECT
                out.append(Transition(node, State.ALIVE, State.SUSPECT, m.incarnation, "silent"))
            if m.state is State.SUSPECT and silent >= cfg.dead_after:
                m.state = State.DEAD
                m.deaths.append(now)
                m.streak = 0
                out.append(Transition(node, State.SUSPECT, State.DEAD, m.incarnation, "silent"))
        return out

    def state(self, node: NodeId) -> State | None:
        """A member's state, None if never seen."""
        m = self._members.get(node)
        return None if m is None else m.state

    def incarnation(self, node: NodeId) -> Incarnation | None:
        """A member's current incarnation."""
        m = self._members.get(node)
        return None if m is None else m.incarnation

    def members(self, state: State | None = None) -> list[NodeId]:
        """Members, optionally only those in one state, sorted by id."""
        return sorted(n for n, m in self._members.items() if state is None or m.state is state)
