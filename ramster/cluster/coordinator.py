"""The coordinator's logic: a state machine, `handle(event) -> [instructions]`. Pure: no I/O.

Owners keep the per-page locations; the coordinator keeps aggregates only (per node capacity and
usage, per (owner, holder) pages), rebuilt from the reports members send in their heartbeats, so
a newly elected coordinator knows as much after one round and its memory never grows with pages.
From them it decides:
- Repair: an owner has copies on a holder that is no longer a live member (dead, or restarted
  as a new incarnation) or that is draining, or pages placed with fewer than R copies while
  holders were missing (and some member has room now): that owner re-replicates them.
- Move: with redundancy whole, the fullest holder's free room is far below the emptiest's (a
  node joined, or the load is uneven): one owner moves a bounded number of copies across.
Every order carries the coordinator's term and a number; an owner reports the last order it
finished in its heartbeat, and an order that stays unanswered is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """How eagerly the coordinator orders work; counts are pages, rounds are heartbeats."""

    rebalance_gap: float = 0.25
    """Move copies while the fullest holder's free room is below (1 - gap) of the emptiest's."""
    move_pages_max: int = 8192
    """Pages one move order may ask for: bounded work per order, re-planned every round."""
    reissue_rounds: int = 6
    """Rounds after which an unanswered order is sent again (it may have been lost)."""
    futile_rounds: int = 20
    """Rounds an owner that could move nothing between two holders is not asked again."""


@dataclass(frozen=True, slots=True)
class Report:
    """What one member says of itself in its heartbeat, as the coordinator needs it."""

    lent_budget: int = 0
    lent_free: int = 0
    lent_pages: int = 0
    draining: bool = False
    inventory: Mapping[str, int] = field(default_factory=dict)
    """holder -> pages of this owner kept there"""
    under_replicated: int = 0
    done: tuple[int, int, int] = (0, 0, 0)
    """(term, order, pages) of the last order this member finished"""

    @classmethod
    def parse(cls, info: Mapping[str, Any]) -> Report:
        """From a heartbeat answer; fields of the wrong type read as absent."""

        def num(key: str) -> int:
            value = info.get(key)
            return value if type(value) is int and value >= 0 else 0

        inventory = info.get("inventory")
        done = info.get("orders_done")
        return cls(
            lent_budget=num("lent_budget"),
            lent_free=num("lent_free"),
            lent_pages=num("lent_pages"),
            draining=info.get("draining") is True,
            inventory={
                str(h): c
                for h, c in (inventory.items() if isinstance(inventory, dict) else ())
                if type(c) is int and c > 0
            },
            under_replicated=num("under_replicated"),
            done=(
                (done[0], done[1], done[2])
                if isinstance(done, list | tuple)
                and len(done) == 3
                and all(type(x) is int for x in done)
                else (0, 0, 0)
            ),
        )

    @property
    def mean_page_bytes(self) -> int:
        """Mean stored size of the pages this member holds for others (a page's worth if none)."""
        used = self.lent_budget - self.lent_free
        return max(1, used // self.lent_pages) if self.lent_pages else 4096


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reports:
    """One heartbeat round: the latest report of every live member, the coordinator's own too."""

    members: Mapping[str, Report]


@dataclass(frozen=True, slots=True)
class RebalanceRequested:
    """An operator asks to even out the holders now, whatever the gap."""


Event: TypeAlias = Reports | RebalanceRequested


# -- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Repair:
    """Order: re-replicate the owner's copies on `lost` (unreadable) and `leaving` holders."""

    owner: str
    term: int
    order: int
    lost: tuple[str, ...]
    leaving: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Move:
    """Order: move up to `pages` of the owner's copies from `source` to `target`."""

    owner: str
    term: int
    order: int
    source: str
    target: str
    pages: int


@dataclass(frozen=True, slots=True)
class Note:
    """Something operators should see in the event log."""

    kind: str
    node: str
    detail: str = ""


Order: TypeAlias = Repair | Move
Instruction: TypeAlias = Repair | Move | Note


@dataclass(slots=True)
class _Pending:
    order: Order
    round: int


class Coordinator:
    """The coordinator of one term; a new term starts a new one (its state is soft)."""

    def __init__(self, me: str, term: int, config: CoordinatorConfig | None = None) -> None:
        self.me = me
        self.term = term
        self.config = config or CoordinatorConfig()
        self.members: dict[str, Report] = {}
        self._round = 0
        self._next_order = 1
        self._pending: dict[str, _Pending] = {}
        self._futile: dict[tuple[str, str, str], int] = {}
        self._idle_repair: dict[str, int] = {}
        self._force_rebalance = False
        self.orders_sent = 0
        self.pages_moved = 0

    def handle(self, event: Event) -> list[Instruction]:
        """Take in one event; the orders and notes it leads to."""
        if isinstance(event, RebalanceRequested):
            self._force_rebalance = True
            return [Note("rebalance-requested", self.me)]
        return self._round_of(dict(event.members))

    # -- one round --------------------------------------------------------------------------------

    def _round_of(self, members: dict[str, Report]) -> list[Instruction]:
        self._round += 1
        out: list[Instruction] = []
        first = self._round == 1
        if not first:
            out += [Note("joined", n) for n in sorted(members.keys() - self.members.keys())]
            out += [Note("died", n) for n in sorted(self.members.keys() - members.keys())]
        out += [
            Note("draining", n)
            for n, r in sorted(members.items())
            if r.draining and (first or not self.members.get(n, r).draining)
        ]
        self.members = members
        out += self._settle()
        repairs = self._plan_repairs()
        out += repairs
        if not repairs and not any(isinstance(p.order, Repair) for p in self._pending.values()):
            out += self._plan_move()
        self.orders_sent += sum(1 for i in out if not isinstance(i, Note))
        return out

    def _settle(self) -> list[Instruction]:
        """Retire orders their owners report finished (or that died with their owner)."""
        out: list[Instruction] = []
        for owner, pending in list(self._pending.items()):
            report = self.members.get(owner)
            if report is None:
                del self._pending[owner]
                continue
            term, order, pages = report.done
            if (term, order) < (self.term, pending.order.order):
                continue
            del self._pending[owner]
            o = pending.order
            if isinstance(o, Move):
                self.pages_moved += pages
                if pages == 0:
                    self._futile[(owner, o.source, o.target)] = self._round
                else:
                    out.append(Note("moved", owner, f"{pages} pages {o.source} -> {o.target}"))
            elif pages:
                out.append(Note("repaired", owner, f"{pages} pages"))
            else:
                self._idle_repair[owner] = self._round  # nowhere to copy to: not every round
        return out

    def _issue(self, order: Order) -> Order:
        self._pending[order.owner] = _Pending(order, self._round)
        self._next_order += 1
        return order

    def _plan_repairs(self) -> list[Instruction]:
        out: list[Instruction] = []
        draining = {n for n, r in self.members.items() if r.draining}
        for owner, report in sorted(self.members.items()):
            lost = tuple(sorted(h for h in report.inventory if h not in self.members))
            leaving = tuple(sorted(h for h in report.inventory if h in draining))
            # Pages placed with fewer than R copies (degraded mode) are repaired once some
            # member other than their owner has room again.
            short = report.under_replicated > 0 and any(
                r.lent_free > 0 and not r.draining for n, r in self.members.items() if n != owner
            )
            if not lost and not leaving and not short:
                continue
            idle = self._idle_repair.get(owner)
            if idle is not None and self._round - idle < self.config.reissue_rounds:
                continue
            pending = self._pending.get(owner)
            if pending is not None:
                same = (
                    isinstance(pending.order, Repair)
                    and pending.order.lost == lost
                    and pending.order.leaving == leaving
                )
                if same and self._round - pending.round < self.config.reissue_rounds:
                    continue
            todo = sum(report.inventory[h] for h in (*lost, *leaving))
            where = ", ".join((*lost, *leaving))
            detail = (
                f"{todo} page copies on {where}"
                if where
                else f"{report.under_replicated} pages with fewer than R copies"
            )
            out.append(Note("repair", owner, detail))
            out.append(self._issue(Repair(owner, self.term, self._next_order, lost, leaving)))
        return out

    def _plan_move(self) -> list[Instruction]:
        """At most one new move per round: from the fullest holder to the emptiest one that the
        owner with the most pages there may use."""
        cfg = self.config
        for key, at in list(self._futile.items()):
            if self._round - at >= cfg.futile_rounds:
                del self._futile[key]
        for owner, pending in list(self._pending.items()):
            if self._round - pending.round >= cfg.reissue_rounds:
                del self._pending[owner]  # unanswered: plan afresh
        holders = {n: r for n, r in self.members.items() if r.lent_budget > 0 and not r.draining}
        if len(holders) < 2:
            return []
        free = {n: r.lent_free for n, r in holders.items()}
        for pending in self._pending.values():
            o = pending.order
            if isinstance(o, Move) and o.source in free and o.target in free:
                moving = o.pages * holders[o.source].mean_page_bytes
                free[o.source] += moving
                free[o.target] -= moving
        fullest = min(free, key=lambda n: (free[n], n))
        force, self._force_rebalance = self._force_rebalance, False
        mean = holders[fullest].mean_page_bytes
        owners = sorted(
            (
                (r.inventory.get(fullest, 0), o)
                for o, r in self.members.items()
                if o not in self._pending and r.inventory.get(fullest, 0) > 0
            ),
            reverse=True,
        )
        for held, owner in owners:
            # The emptiest holder this owner may use: never itself (an owner holds no copies
            # of its own pages), and a joining node is often the only other candidate.
            targets = [n for n in free if n not in (owner, fullest)]
            if not targets:
                continue
            target = max(targets, key=lambda n: (free[n], n))
            gap = free[target] - free[fullest]
            threshold = 0 if force else cfg.rebalance_gap * free[target]
            if gap <= max(threshold, mean) or (owner, fullest, target) in self._futile:
                continue
            pages = min(max(1, gap // 2 // mean), held, cfg.move_pages_max)
            return [
                Note("rebalance", owner, f"{pages} pages {fullest} -> {target}"),
                self._issue(Move(owner, self.term, self._next_order, fullest, target, pages)),
            ]
        return []

    # -- what operators see ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Aggregates as plain data: members' capacity, pages per owner and holder, work going."""
        pages = {o: dict(r.inventory) for o, r in self.members.items() if r.inventory}
        return {
            "coordinator": self.me,
            "term": self.term,
            "round": self._round,
            "members": {
                n: {
                    "lent_budget": r.lent_budget,
                    "lent_free": r.lent_free,
                    "lent_pages": r.lent_pages,
                    "draining": r.draining,
                }
                for n, r in sorted(self.members.items())
            },
            "pages": pages,
            "bytes": {
                o: {
                    h: c * (self.members[h].mean_page_bytes if h in self.members else 0)
                    for h, c in inv.items()
                }
                for o, inv in pages.items()
            },
            "under_replicated": sum(r.under_replicated for r in self.members.values()),
            "orders_pending": {
                o: type(p.order).__name__.lower() for o, p in sorted(self._pending.items())
            },
            "orders_sent": self.orders_sent,
            "pages_moved": self.pages_moved,
        }


# -- the wire form of orders -------------------------------------------------------------------

MAX_NAMES = 256
"""Bound on the holder names one order may carry (the peer table's bound)."""
MAX_NAME_CHARS = 300
"""Node ids, and tombstones of restarted holders (id~incarnation)."""


def order_to_wire(order: Order, coordinator: str) -> list[object]:
    """The RPC parameters of an order, as the coordinator sends it."""
    head: list[object] = [order.term, coordinator, order.order]
    if isinstance(order, Repair):
        return [*head, "repair", order.owner, list(order.lost), list(order.leaving)]
    return [*head, "move", order.owner, order.source, order.target, order.pages]


def order_from_wire(params: list[object]) -> tuple[str, Order]:
    """(coordinator, order) from RPC parameters; ValueError says what is malformed."""

    def name(x: object) -> str:
        if type(x) is not str or not 0 < len(x) <= MAX_NAME_CHARS:
            raise ValueError(f"node names are 1..{MAX_NAME_CHARS} characters of text")
        return x

    def count(x: object) -> int:
        if type(x) is not int or not 0 <= x < 1 << 63:
            raise ValueError("term, order and pages are non-negative integers")
        return x

    def names(x: object) -> tuple[str, ...]:
        if type(x) is not list or len(x) > MAX_NAMES:
            raise ValueError(f"holder lists have at most {MAX_NAMES} names")
        return tuple(name(n) for n in x)

    if len(params) < 5:
        raise ValueError("an order is [term, coordinator, order, kind, owner, ...]")
    term, coordinator, number, kind, owner = params[:5]
    rest = params[5:]
    if kind == "repair" and len(rest) == 2:
        repair = Repair(name(owner), count(term), count(number), names(rest[0]), names(rest[1]))
        return name(coordinator), repair
    if kind == "move" and len(rest) == 3:
        move = Move(
            name(owner), count(term), count(number), name(rest[0]), name(rest[1]), count(rest[2])
        )
        return name(coordinator), move
    raise ValueError(f"unknown order kind or shape: {kind!r} with {len(rest)} arguments")
