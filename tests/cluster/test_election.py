"""The election, driven by hand."""

from __future__ import annotations

from ramster.cluster.election import Election, View


def test_lowest_live_id_coordinates_and_terms_rise() -> None:
    b = Election("b")
    assert b.is_coordinator  # alone, a node coordinates itself
    assert b.update({"a", "c"}, {}) == View("a", 1)
    assert b.view.coordinator == "a"
    assert b.update({"a", "c"}, {"a": View("a", 1)}) is None  # settled
    # a dies: b takes over in a higher term.
    assert b.update({"c"}, {"c": View("a", 1)}) == View("b", 2)
    assert b.is_coordinator
    assert b.accepts(2, "b")
    assert not b.accepts(2, "a")  # the same term from anyone else is not an order
    assert not b.accepts(1, "a")
    assert b.accepts(3, "c")  # a newer term this node has not heard of yet


def test_views_converge_on_the_highest_term() -> None:
    c = Election("c")
    c.update({"a", "b"}, {})
    # b already agreed a higher term for the same coordinator: c follows it.
    assert c.update({"a", "b"}, {"b": View("a", 7)}) == View("a", 7)
    # A node that comes back with an old view does not pull the term down.
    assert c.update({"a", "b"}, {"a": View("a", 3)}) is None
    assert c.view == View("a", 7)


def test_every_node_agrees_after_a_coordinator_dies() -> None:
    nodes = {n: Election(n) for n in "abcd"}
    views: dict[str, View] = {}
    for _ in range(3):
        for n, e in nodes.items():
            e.update(set(nodes) - {n}, {m: v for m, v in views.items() if m != n})
            views[n] = e.view
    assert set(views.values()) == {View("a", 0)}
    del nodes["a"]
    views.pop("a")
    for _ in range(3):
        for n, e in nodes.items():
            e.update(set(nodes) - {n}, {m: v for m, v in views.items() if m != n})
            views[n] = e.view
    assert set(views.values()) == {View("b", 1)}


def test_a_newcomer_with_a_lower_id_takes_over_in_a_higher_term() -> None:
    # Seen in containers: a scaled node's generated id sorts below node1; its own view of
    # itself is term 0, which must not count as agreement with a lower term.
    node1 = Election("node1")
    node1.update({"node2"}, {})
    node1.update({"node2"}, {"node2": View("node1", 1)})
    assert node1.view == View("node1", 1)
    new = node1.update(
        {"node2", "node-1a"}, {"node2": View("node1", 1), "node-1a": View("node-1a", 0)}
    )
    assert new is not None and new.coordinator == "node-1a" and new.term > 1
    newcomer = Election("node-1a")
    newcomer.update({"node1", "node2"}, {"node1": node1.view, "node2": View("node1", 1)})
    assert newcomer.view == node1.view  # it adopts the term the others moved to


def test_an_absurd_term_from_one_peer_is_ignored() -> None:
    from ramster.cluster.election import MAX_TERM, MAX_TERM_JUMP

    e = Election("b")
    assert e.update({"a", "c"}, {"a": View("a", 3), "c": View("a", 3)}) == View("a", 3)
    # One peer announces a term near 2^64, another an absurd jump: neither is believed.
    assert e.update({"a", "c"}, {"a": View("a", 3), "c": View("c", (1 << 64) - 1)}) is None
    assert e.update({"a", "c"}, {"a": View("a", 3), "c": View("c", 3 + MAX_TERM_JUMP + 1)}) is None
    assert e.view == View("a", 3)
    assert e.refused_views == 2
    assert not e.accepts(MAX_TERM, "a") and not e.accepts(3 + MAX_TERM_JUMP + 1, "a")
    assert e.accepts(4, "a")
    # The coordinator dies: the survivors move on from the sane term, not the absurd one.
    new = e.update({"c"}, {"c": View("c", 1 << 63)})
    assert new is not None and new.term == 4 and new.coordinator == "b"


def test_a_newcomer_joins_a_cluster_far_along() -> None:
    e = Election("z")
    assert e.update({"a", "b"}, {"a": View("a", 40_000), "b": View("a", 40_000)}) == View(
        "a", 40_000
    )
