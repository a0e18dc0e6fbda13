"""The thin async shells around the coordinator: one runs the state machine while this node is
elected and carries its instructions out; the other follows the orders this node receives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ramster.cluster.coordinator import (
    Coordinator,
    CoordinatorConfig,
    Move,
    Note,
    Order,
    RebalanceRequested,
    Repair,
    Report,
    Reports,
    order_to_wire,
)
from ramster.cluster.election import Election
from ramster.errors import RamsterError

log = logging.getLogger(__name__)

OWN_DETECTION_POLL = 0.1


class Worker(Protocol):
    """What following orders needs of the owner's remote tier."""

    async def repair(self, gone: set[str], leaving: set[str] | None = None) -> int: ...
    def under_replicated(self, gone: set[str], leaving: set[str] | None = None) -> int: ...
    async def move(self, source: str, target: str, max_pages: int) -> int: ...


class CoordinatorDriver:
    """Runs a `Coordinator` for each term this node is elected in; sends its orders."""

    def __init__(
        self,
        election: Election,
        reports: Callable[[], Mapping[str, Mapping[str, Any]]],
        send: Callable[[str, list[object]], Awaitable[object]],
        follower: OrderFollower,
        interval: float,
        wake: asyncio.Event,
        record: Callable[[str, str, str], object],
        config: CoordinatorConfig | None = None,
    ) -> None:
        self.election = election
        self._reports = reports
        self._send = send
        self._follower = follower
        self.interval = interval
        self._wake = wake
        self.config = config or CoordinatorConfig()
        self.coordinator: Coordinator | None = None
        self._record = record
        self.orders_failed = 0

    async def run(self) -> None:
        """One round per heartbeat, and at once when membership changes, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.round()

    async def round(self) -> None:
        """Feed the latest reports to the coordinator (if this node is it) and act."""
        view = self.election.view
        if not self.election.is_coordinator:
            if self.coordinator is not None:
                self.note(Note("deposed", view.coordinator, f"term {view.term}"))
            self.coordinator = None
            return
        if self.coordinator is None or self.coordinator.term != view.term:
            self.coordinator = Coordinator(self.election.me, view.term, self.config)
            self.note(Note("elected", self.election.me, f"term {view.term}"))
        reports = {n: Report.parse(info) for n, info in self._reports().items()}
        await self.carry_out(self.coordinator.handle(Reports(reports)))

    async def request_rebalance(self) -> bool:
        """Even the holders out now (False when this node does not coordinate)."""
        if self.coordinator is None:
            return False
        await self.carry_out(self.coordinator.handle(RebalanceRequested()))
        return True

    async def carry_out(self, instructions: list[Note | Order]) -> None:
        """Log notes; send orders, all at once (each owner gets at most one per round)."""
        orders: list[Order] = []
        for ins in instructions:
            if isinstance(ins, Note):
                self.note(ins)
            else:
                orders.append(ins)
        if orders:
            await asyncio.gather(*(self._deliver(o) for o in orders))

    async def _deliver(self, order: Order) -> None:
        if order.owner == self.election.me:
            self._follower.offer(order)
            return
        try:
            await self._send(order.owner, order_to_wire(order, self.election.me))
        except RamsterError as exc:
            # Not answered: the coordinator sends it again after `reissue_rounds`.
            self.orders_failed += 1
            log.info("order %d to %s not delivered: %s", order.order, order.owner, exc)

    def note(self, note: Note) -> None:
        """Record an event for operators (the event log also logs it)."""
        self._record(note.kind, note.node, note.detail)

    def snapshot(self) -> dict[str, Any] | None:
        """The coordinator's aggregates (None on other nodes)."""
        if self.coordinator is None:
            return None
        return {**self.coordinator.snapshot(), "orders_failed": self.orders_failed}


class OrderFollower:
    """Carries out the coordinator's orders for this owner, one at a time, repairs first.

    Bounded: it keeps at most the newest repair and the newest move; a newer order of a kind
    replaces the older one, which the coordinator's state already supersedes.
    """

    def __init__(
        self,
        worker: Worker,
        present: Callable[[], set[str]],
        own_detection: float,
        gone: Callable[[], set[str]] = set,
    ) -> None:
        self._worker = worker
        self._present = present
        self._gone = gone
        self._own_detection = own_detection
        self._repair: Repair | None = None
        self._move: Move | None = None
        self._wake = asyncio.Event()
        self.done: tuple[int, int, int] = (0, 0, 0)
        """(term, order, pages) of the last order finished, as heartbeats report it."""
        self.busy: str | None = None
        self.repairing = 0
        """Pages the current repair order set out to re-replicate (progress for operators)."""

    def offer(self, order: Order) -> None:
        """Accept an order (its term already checked)."""
        if isinstance(order, Repair):
            self._repair = order
        else:
            self._move = order
        self._wake.set()

    async def run(self) -> None:
        """Follow orders until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (order := self._take()) is not None:
                self.busy = type(order).__name__.lower()
                try:
                    pages = await self._carry_out(order)
                finally:
                    self.busy = None
                self.done = (order.term, order.order, pages)

    def _take(self) -> Order | None:
        order: Order | None = self._repair or self._move
        if order is self._repair:
            self._repair = None
        else:
            self._move = None
        return order

    async def _carry_out(self, order: Order) -> int:
        if isinstance(order, Move):
            moved = await self._worker.move(order.source, order.target, order.pages)
            if moved:
                log.info("moved %d copies %s -> %s", moved, order.source, order.target)
            return moved
        # The owner reads its own copies: a holder it can still reach is not lost to it. Give
        # its own failure detector the same time the coordinator's had to agree.
        deadline = time.monotonic() + self._own_detection
        while True:
            present = self._present()
            gone = {h for h in order.lost if h not in present}
            if len(gone) == len(order.lost) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(OWN_DETECTION_POLL)
        # Holders this owner itself knows are dead count too: a repair of pages with too few
        # copies must not count a dead holder's copy as one.
        gone |= self._gone()
        leaving = set(order.leaving)
        todo = self._worker.under_replicated(gone, leaving)
        if not todo:
            return 0
        self.repairing = todo
        started = time.monotonic()
        log.warning(
            "re-replicating %d pages: holder(s) gone: %s, leaving: %s",
            todo,
            ",".join(sorted(gone)) or "-",
            ",".join(sorted(leaving)) or "-",
        )
        total = 0
        try:
            while True:
                done = await self._worker.repair(gone, leaving)
                total += done
                if done <= 0 or not self._worker.under_replicated(gone, leaving):
                    break
        finally:
            self.repairing = 0
        log.info(
            "re-replicated %d of %d pages in %.2f s; %d still under-replicated",
            total,
            todo,
            time.monotonic() - started,
            self._worker.under_replicated(gone, leaving),
        )
        return total
