"""The failure detector, driven by hand: no network, no clock."""

from __future__ import annotations

import pytest

from ramster.cluster.membership import Membership, MembershipConfig, State
from ramster.types import Incarnation, NodeId

A = NodeId("a")


def beats(
    m: Membership, node: NodeId, inc: str, start: float, count: int, every: float = 0.5
) -> float:
    t = start
    for _ in range(count):
        m.heartbeat_ok(node, Incarnation(inc), t)
        m.tick(t)
        t += every
    return t


def test_silence_makes_suspect_then_dead() -> None:
    m = Membership(MembershipConfig(suspect_after=1.0, dead_after=3.0))
    (first,) = m.heartbeat_ok(A, Incarnation("1"), 0.0)
    assert first.new is State.ALIVE and first.old is None
    assert m.tick(0.9) == []
    (t,) = m.tick(1.0)
    assert (t.old, t.new) == (State.ALIVE, State.SUSPECT)
    (t,) = m.heartbeat_ok(A, Incarnation("1"), 1.5)
    assert (t.old, t.new, t.reason) == (State.SUSPECT, State.ALIVE, "answered")
    m.tick(2.6)
    (t,) = m.tick(4.5)
    assert (t.old, t.new) == (State.SUSPECT, State.DEAD)
    assert m.members(State.DEAD) == ["a"]


def test_a_dead_member_must_answer_in_a_row_to_rejoin() -> None:
    m = Membership(MembershipConfig(suspect_after=1.0, dead_after=2.0, rejoin_beats=3))
    m.heartbeat_ok(A, Incarnation("1"), 0.0)
    m.tick(1.0)
    m.tick(2.0)
    assert m.state(A) is State.DEAD
    assert m.heartbeat_ok(A, Incarnation("1"), 10.0) == []
    assert m.heartbeat_ok(A, Incarnation("1"), 10.5) == []
    (t,) = m.heartbeat_ok(A, Incarnation("1"), 11.0)
    assert (t.old, t.new, t.reason) == (State.DEAD, State.ALIVE, "rejoined")


def test_a_restart_is_a_death_of_the_old_incarnation() -> None:
    m = Membership(MembershipConfig(rejoin_beats=1))
    m.heartbeat_ok(A, Incarnation("1"), 0.0)
    died, back = m.heartbeat_ok(A, Incarnation("2"), 0.5)
    assert (died.new, died.incarnation, died.reason) == (State.DEAD, "1", "restarted")
    assert (back.new, back.incarnation) == (State.ALIVE, "2")
    assert m.incarnation(A) == "2"


def test_flapping_is_damped() -> None:
    cfg = MembershipConfig(
        suspect_after=1.0,
        dead_after=2.0,
        rejoin_beats=2,
        flap_window=100.0,
        flap_limit=2,
        damped_beats=6,
    )
    m = Membership(cfg)
    t = beats(m, A, "1", 0.0, 3)
    m.tick(t + 1.0)
    m.tick(t + 2.0)
    assert m.state(A) is State.DEAD
    t = beats(m, A, "1", t + 10.0, 2)
    assert m.state(A) is State.ALIVE  # one death: 2 beats bring it back
    m.tick(t + 1.0)
    m.tick(t + 2.0)
    assert m.state(A) is State.DEAD
    t = beats(m, A, "1", t + 10.0, 5)
    assert m.state(A) is State.DEAD  # two deaths in the window: 6 are needed
    beats(m, A, "1", t, 1)
    assert m.state(A) is State.ALIVE


@pytest.mark.parametrize(
    "kwargs", [{"suspect_after": 3.0, "dead_after": 2.0}, {"rejoin_beats": 0}, {"damped_beats": 1}]
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        MembershipConfig(**kwargs)  # type: ignore[arg-type]


def test_a_restart_is_told_even_after_silence_made_it_dead() -> None:
    m = Membership(MembershipConfig(suspect_after=1, dead_after=2))
    m.heartbeat_ok(A, Incarnation("inc1"), 0.0)
    m.tick(5.0)
    assert m.state(A) is State.DEAD
    # The new incarnation's first heartbeat: whoever kept copies on inc1 must hear of it.
    out = m.heartbeat_ok(A, Incarnation("inc2"), 6.0)
    assert [(t.old, t.new, t.incarnation, t.reason) for t in out] == [
        (State.DEAD, State.DEAD, "inc1", "restarted")
    ]
