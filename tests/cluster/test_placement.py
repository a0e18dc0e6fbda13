"""Placement: distinct holders, room checked, load spread by free capacity."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ramster.cluster import Candidate, choose_holders
from ramster.types import NodeId


def test_distinct_holders_with_room() -> None:
    rng = random.Random(1)
    peers = [Candidate(NodeId("a"), 100), Candidate(NodeId("b"), 100), Candidate(NodeId("c"), 5)]
    for _ in range(200):
        chosen = choose_holders(peers, 2, need_bytes=10, rng=rng)
        assert sorted(chosen) == ["a", "b"]


def test_not_enough_peers_means_no_placement() -> None:
    rng = random.Random(1)
    assert choose_holders([Candidate(NodeId("a"), 100)], 2, 1, rng) == []
    assert choose_holders([Candidate(NodeId("a"), 100), Candidate(NodeId("b"), 0)], 2, 1, rng) == []
    assert choose_holders([Candidate(NodeId("a"), 9), Candidate(NodeId("b"), 9)], 1, 10, rng) == []


def test_excluded_nodes_are_never_chosen() -> None:
    rng = random.Random(2)
    peers = [Candidate(NodeId(n), 100) for n in "abcd"]
    for _ in range(100):
        assert "b" not in choose_holders(peers, 3, 1, rng, exclude=frozenset({"b"}))


def test_freer_peers_get_more() -> None:
    rng = random.Random(3)
    peers = [
        Candidate(NodeId("big"), 900),
        Candidate(NodeId("mid"), 300),
        Candidate(NodeId("small"), 100),
    ]
    counts: Counter[str] = Counter(choose_holders(peers, 1, 1, rng)[0] for _ in range(3000))
    assert counts["big"] > counts["mid"] > counts["small"] > 0


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replicas"):
        choose_holders([Candidate(NodeId("a"), 1)], 0, 1, random.Random(0))


def test_degraded_placement_takes_fewer_down_to_the_minimum() -> None:
    rng = random.Random(4)
    peers = [Candidate(NodeId("a"), 100), Candidate(NodeId("b"), 0), Candidate(NodeId("c"), 100)]
    assert sorted(choose_holders(peers, 3, 1, rng, minimum=1)) == ["a", "c"]
    assert choose_holders(peers, 3, 1, rng, minimum=3) == []
    assert choose_holders([Candidate(NodeId("a"), 100)], 2, 1, rng, minimum=1) == ["a"]
    assert choose_holders([], 2, 1, rng, minimum=1) == []
    with pytest.raises(ValueError, match="minimum"):
        choose_holders(peers, 2, 1, rng, minimum=3)
