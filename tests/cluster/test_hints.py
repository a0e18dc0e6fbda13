"""The hint table of discovered addresses: bounded, expiring, drawn at random, failures
remembered for a while. Pure logic: no sockets, no clock but the one passed in."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.cluster.hints import MAX_FAILED, Hints


def test_bounded_oldest_evicted() -> None:
    h = Hints(capacity=3)
    for i in range(5):
        assert h.offer(f"10.0.0.{i}:1", now=float(i))
    assert len(h) == 3
    taken = {h.take(10.0) for _ in range(3)}
    assert taken == {"10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"}
    assert h.take(10.0) is None
    assert h.statistics().dropped == 2


def test_duplicates_and_recent_failures_are_not_offered_again() -> None:
    h = Hints(retry_after=30.0)
    assert h.offer("a:1", 0.0)
    assert not h.offer("a:1", 1.0)
    assert h.take(1.0) == "a:1"
    h.failed("a:1", 2.0)
    assert not h.offer("a:1", 10.0)
    assert h.offer("a:1", 33.0)


def test_hints_expire() -> None:
    h = Hints(ttl=60.0)
    h.offer("old:1", 0.0)
    h.offer("new:1", 50.0)
    assert h.take(70.0) == "new:1"
    assert h.take(70.0) is None


def test_a_real_hint_is_not_starved_by_a_flood() -> None:
    # Draws are random: among 64 pending, a real node's hint is taken soon, not last.
    rng = random.Random(7)
    wins = 0
    for trial in range(200):
        h = Hints(rng=rng)
        h.offer("real:1", 0.0)
        for i in range(63):
            h.offer(f"fake{trial}-{i}:1", 0.0)
        wins += any(h.take(0.0) == "real:1" for _ in range(8))
    assert wins > 200 * 8 / 64 * 0.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("otf"), st.integers(0, 3000)), max_size=300))
def test_never_more_than_the_bounds(ops: list[tuple[str, int]]) -> None:
    h = Hints(capacity=8)
    now = 0.0
    for op, n in ops:
        now += 0.5
        if op == "o":
            h.offer(f"h{n}:1", now)
        elif op == "t":
            h.take(now)
        else:
            h.failed(f"h{n}:1", now)
        assert len(h) <= 8
        assert len(h._failed) <= MAX_FAILED
