"""The coordinator's state machine, driven by hand and by a small simulated cluster: no network."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramster.cluster.coordinator import (
    Coordinator,
    CoordinatorConfig,
    Instruction,
    Move,
    Note,
    RebalanceRequested,
    Repair,
    Report,
    Reports,
    order_from_wire,
    order_to_wire,
)

PAGE = 2048  # mean stored bytes per page in these reports
BUDGET = 1000 * PAGE


def report(held: int = 0, inventory: dict[str, int] | None = None, **kw: object) -> Report:
    fields: dict[str, object] = {
        "lent_budget": BUDGET,
        "lent_free": BUDGET - held * PAGE,
        "lent_pages": held,
        "inventory": inventory or {},
        **kw,
    }
    return Report(**fields)  # type: ignore[arg-type]


def orders(out: list[Instruction]) -> list[Repair | Move]:
    return [i for i in out if not isinstance(i, Note)]


def notes(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.kind, i.node) for i in out if isinstance(i, Note)]


def test_a_balanced_healthy_cluster_gets_no_orders() -> None:
    c = Coordinator("a", 1)
    members = {
        "a": report(100, {"b": 50, "c": 50}),
        "b": report(100, {"a": 50, "c": 50}),
        "c": report(100, {"a": 50, "b": 50}),
    }
    for _ in range(5):
        assert c.handle(Reports(members)) == []


def test_a_dead_holder_gets_its_copies_repaired_by_their_owners() -> None:
    c = Coordinator("a", 3, CoordinatorConfig(reissue_rounds=3))
    members = {
        "a": report(100, {"b": 50, "c": 50}),
        "b": report(100, {"a": 50, "c": 50}),
        "c": report(100, {"a": 50, "b": 50}),
    }
    c.handle(Reports(members))
    del members["c"]
    out = c.handle(Reports(members))
    assert ("died", "c") in notes(out)
    assert orders(out) == [
        Repair("a", 3, 1, lost=("c",), leaving=()),
        Repair("b", 3, 2, lost=("c",), leaving=()),
    ]
    # Pending orders are not sent again every round...
    assert orders(c.handle(Reports(members))) == []
    assert orders(c.handle(Reports(members))) == []
    # ...only once they stay unanswered for reissue_rounds.
    again = orders(c.handle(Reports(members)))
    assert [(o.owner, o.order) for o in again] == [("a", 3), ("b", 4)]
    # a finished; its report no longer references c. b is still working.
    members["a"] = report(100, {"b": 100}, done=(3, 3, 50))
    out = c.handle(Reports(members))
    assert ("repaired", "a") in notes(out)
    assert orders(out) == []
    assert c.snapshot()["orders_pending"] == {"b": "repair"}


def test_a_restarted_holder_tombstone_counts_as_lost() -> None:
    c = Coordinator("a", 1)
    members = {"a": report(0, {"b~old": 7, "b": 3}), "b": report(10)}
    assert orders(c.handle(Reports(members))) == [Repair("a", 1, 1, ("b~old",), ())]


def test_draining_holders_are_emptied_and_never_filled() -> None:
    c = Coordinator("a", 1)
    members = {
        "a": report(0, {"b": 40, "c": 40}),
        "b": report(40, draining=True),
        "c": report(40),
        "d": report(0),
    }
    out = c.handle(Reports(members))
    assert ("draining", "b") in notes(out)
    assert orders(out) == [Repair("a", 1, 1, lost=(), leaving=("b",))]
    members["a"] = report(0, {"c": 40, "d": 40}, done=(1, 1, 40))
    members["b"] = report(0, draining=True)
    members["d"] = report(40)
    out = c.handle(Reports(members))
    assert orders(out) == []  # b is empty; d and c are even; nobody moves onto b


def test_a_joining_node_gets_its_share_in_bounded_moves() -> None:
    c = Coordinator("a", 1, CoordinatorConfig(move_pages_max=100))
    members = {
        "a": report(0, {"b": 600, "c": 600}, lent_budget=0, lent_free=0),  # lends nothing
        "b": report(600),
        "c": report(600),
        "d": report(0),  # joined, empty
    }
    out = orders(c.handle(Reports(members)))
    assert out == [Move("a", 1, 1, source="b", target="d", pages=100)]
    # While that move runs, the plan counts it as done: the next move comes from c.
    members["e"] = report(0, {"c": 200}, lent_budget=0, lent_free=0)  # lends nothing
    out = orders(c.handle(Reports(members)))
    assert out == [Move("e", 1, 2, source="c", target="d", pages=100)]


def test_a_newcomer_gets_copies_even_when_the_only_owner_is_as_empty() -> None:
    # Seen in containers: the one owner lends too and holds nothing, so it ties with the
    # newcomer as "emptiest"; it can never be its own target, the newcomer must be.
    c = Coordinator("x", 1)
    members = {
        "node1": report(0, {"node2": 400, "node3": 400}),
        "node2": report(400),
        "node3": report(400),
        "node-1a2b": report(0),
    }
    out = orders(c.handle(Reports(members)))
    assert len(out) == 1
    move = out[0]
    assert isinstance(move, Move)
    assert (move.owner, move.source, move.target) == ("node1", "node2", "node-1a2b")


def test_an_owner_that_cannot_move_is_not_asked_again_soon() -> None:
    c = Coordinator("a", 1, CoordinatorConfig(futile_rounds=5))
    members = {"a": report(0, {"b": 300, "c": 300}), "b": report(300), "c": report(0)}
    # Only a has pages on b, and every one of its sets already includes c: it moves nothing.
    first = orders(c.handle(Reports(members)))
    assert [type(o) for o in first] == [Move]
    members["a"] = report(0, {"b": 300, "c": 300}, done=(1, 1, 0))
    for _ in range(5):
        assert orders(c.handle(Reports(members))) == []
    assert [type(o) for o in orders(c.handle(Reports(members)))] == [Move]


def test_no_moves_while_redundancy_is_being_restored() -> None:
    c = Coordinator("a", 1)
    members = {
        "a": report(0, {"b": 300, "x": 10}),
        "b": report(300),
        "c": report(0),
    }
    out = orders(c.handle(Reports(members)))
    assert [type(o) for o in out] == [Repair]


def test_an_operator_can_ask_for_a_rebalance_below_the_gap() -> None:
    c = Coordinator("a", 1)
    members = {
        "a": report(0, {"b": 110, "c": 90}, lent_budget=0, lent_free=0),
        "b": report(110),
        "c": report(90),
    }
    assert orders(c.handle(Reports(members))) == []
    assert notes(c.handle(RebalanceRequested())) == [("rebalance-requested", "a")]
    out = orders(c.handle(Reports(members)))
    assert out == [Move("a", 1, 1, source="b", target="c", pages=10)]


def test_joins_and_deaths_are_noted_from_the_second_round() -> None:
    c = Coordinator("a", 1)
    assert c.handle(Reports({"a": report(), "b": report()})) == []
    out = c.handle(Reports({"a": report(), "c": report()}))
    assert notes(out) == [("joined", "c"), ("died", "b")]


def test_reports_with_garbage_fields_read_as_absent() -> None:
    r = Report.parse(
        {
            "lent_budget": "lots",
            "lent_free": -5,
            "draining": 1,
            "inventory": {"b": 3, "c": "x", "d": 0},
            "orders_done": [1, "2", 3],
        }
    )
    assert r == Report(inventory={"b": 3})


def test_orders_survive_the_wire() -> None:
    for order in (
        Repair("o", 4, 9, ("b", "c~1-2"), ("d",)),
        Move("o", 4, 10, "b", "c", 512),
    ):
        assert order_from_wire(order_to_wire(order, "a")) == ("a", order)


@pytest.mark.parametrize(
    "params",
    [
        [],
        [1, "a", 2, "repair", "o", ["b"]],
        [1, "a", 2, "move", "o", "b", "c", -1],
        [1, "a", 2, "explode", "o"],
        [1, "", 2, "move", "o", "b", "c", 1],
        [1, "a", 2, "repair", "o", ["b"] * 300, []],
        [True, "a", 2, "move", "o", "b", "c", 1],
    ],
)
def test_malformed_orders_are_refused(params: list[object]) -> None:
    with pytest.raises(ValueError):
        order_from_wire(params)


@given(st.lists(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3)))))
def test_any_garbage_is_an_order_or_a_value_error(params: list[object]) -> None:
    with contextlib.suppress(ValueError):
        order_from_wire(params)


# -- a simulated cluster: owners carry orders out at once; the coordinator must converge ----------


class Sim:
    """Owners' copies as counts per (owner, holder); orders applied instantly and exactly."""

    def __init__(self, nodes: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.alive = set(nodes)
        self.draining: set[str] = set()
        self.copies: dict[str, dict[str, int]] = {n: {} for n in nodes}
        self.done: dict[str, tuple[int, int, int]] = {}

    def spill(self, owner: str, pages: int) -> None:
        holders = sorted(self.alive - {owner} - self.draining)
        for _ in range(pages):
            for h in self.rng.sample(holders, 2):  # R = 2
                self.copies[owner][h] = self.copies[owner].get(h, 0) + 1

    def held(self, node: str) -> int:
        return sum(inv.get(node, 0) for inv in self.copies.values())

    def reports(self) -> dict[str, Report]:
        return {
            n: report(
                self.held(n),
                {h: c for h, c in self.copies[n].items() if c},
                draining=n in self.draining,
                done=self.done.get(n, (0, 0, 0)),
            )
            for n in sorted(self.alive)
        }

    def carry_out(self, out: list[Instruction]) -> None:
        for o in orders(out):
            inv = self.copies[o.owner]
            if isinstance(o, Repair):
                moved = 0
                for h in (*o.lost, *o.leaving):
                    n = inv.pop(h, 0)
                    moved += n
                    targets = sorted(
                        self.alive - {o.owner} - self.draining - set(o.leaving),
                        key=self.held,
                    )
                    for i in range(n):
                        t = targets[i % len(targets)]
                        inv[t] = inv.get(t, 0) + 1
                self.done[o.owner] = (o.term, o.order, moved)
            else:
                n = min(o.pages, inv.get(o.source, 0))
                inv[o.source] = inv.get(o.source, 0) - n
                inv[o.target] = inv.get(o.target, 0) + n
                self.done[o.owner] = (o.term, o.order, n)

    def run(self, c: Coordinator, rounds: int) -> None:
        for _ in range(rounds):
            self.carry_out(c.handle(Reports(self.reports())))


@given(st.integers(0, 10_000))
def test_the_cluster_converges_after_a_death_a_join_and_a_drain(seed: int) -> None:
    sim = Sim(["a", "b", "c", "d"], seed)
    for owner in "abcd":
        sim.spill(owner, 60)
    total = sum(sum(inv.values()) for inv in sim.copies.values())
    c = Coordinator("a", 1, CoordinatorConfig(move_pages_max=40))
    sim.run(c, 3)
    # d dies: nothing references it afterwards, and every copy was kept.
    sim.alive.discard("d")
    sim.copies.pop("d")
    total -= 120  # d's own pages died with their owner
    sim.run(c, 10)
    assert all("d" not in inv or not inv["d"] for inv in sim.copies.values())
    assert sum(sum(inv.values()) for inv in sim.copies.values()) == total
    # e joins empty and gets a share; the holders end within the gap of each other.
    sim.alive.add("e")
    sim.copies["e"] = {}
    sim.run(c, 40)
    free = [BUDGET - sim.held(n) * PAGE for n in sim.alive]
    assert max(free) - min(free) <= 0.25 * max(free) + PAGE
    # b drains: it ends holding nothing.
    sim.draining.add("b")
    sim.run(c, 10)
    assert sim.held("b") == 0
    assert sum(sum(inv.values()) for inv in sim.copies.values()) == total
