"""Election and aggregates, driven by hand."""

from __future__ import annotations

from ramster.cluster.coordinator import Aggregates, Election, View


def test_lowest_live_id_coordinates_and_terms_rise() -> None:
    b = Election("b")
    assert b.is_coordinator  # alone, a node coordinates itself
    assert b.update({"a", "c"}, {}) == View("a", 1)
    assert b.view.coordinator == "a"
    assert b.update({"a", "c"}, {"a": View("a", 1)}) is None  # settled
    # a dies: b takes over in a higher term.
    assert b.update({"c"}, {"c": View("a", 1)}) == View("b", 2)
    assert b.is_coordinator
    assert b.accepts(2)
    assert not b.accepts(1)


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


def test_aggregates_from_reports() -> None:
    agg = Aggregates.build(
        {
            "a": {"lent_budget": 100, "lent_free": 40, "inventory": {"b": 10, "c": 10}},
            "b": {"lent_budget": 100, "lent_free": 90, "under_replicated": 3, "inventory": {}},
        }
    )
    assert agg.members["a"] == {"lent_budget": 100, "lent_free": 40}
    assert agg.pages == {"a": {"b": 10, "c": 10}, "b": {}}
    assert agg.under_replicated == 3
