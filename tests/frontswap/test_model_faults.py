"""The remote tier against a dict model, under faults.

Two owners (RemoteTier) share four holders (real LentPools) through the faulty
in-process transport; their spillers and drop queues run in the background all along. Rules
store, overwrite, invalidate, load (plain and exclusive), cancel stores and loads mid-flight,
race a store with invalidate_area, and inject faults: holders down, paused, losing answers,
failing calls, restarted (their copies gone), full lent budgets. After every step every load
returns the model's bytes (or, while a fault is on, PageUnavailable); at quiescence every page
loads back and the holders keep exactly the copies the owners reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ramster.errors import PageUnavailable
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.testing import corpus
from ramster.testing.faults import Faults, FaultyHolders
from ramster.types import Incarnation, NodeId

OWNERS = ("o1", "o2")
HOLDERS = ("h1", "h2", "h3", "h4")
KEYS = 64
LOCAL = 48 << 10
"""Small: most pages live on holders."""
LENT = 160 << 10
INC = "00000001-model"
VALUES = corpus.pages(24, seed=31)
ABSENT = None
T = TypeVar("T")

keys_st = st.lists(st.integers(0, KEYS - 1), min_size=1, max_size=24, unique=True)
owner_st = st.sampled_from(OWNERS)
holder_st = st.sampled_from(HOLDERS)


@dataclass
class Totals:
    """What the runs did, for the record (see the closing note of issue 15)."""

    steps: int = 0
    faults: int = 0
    calls: int = 0
    loads_checked: int = 0
    unavailable: int = 0
    cancelled: int = 0
    restarts_skipped: int = 0
    runs: list[int] = field(default_factory=list)


TOTALS = Totals()


class RemoteTierUnderFaults(RuleBasedStateMachine):
    """The machine; see the module's docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.faults = Faults()
        self.lents = {h: LentPool(PoolConfig(budget_bytes=LENT)) for h in HOLDERS}
        self.owners: dict[str, RemoteTier] = {}
        self.model: dict[str, dict[int, set[bytes | None]]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.restarts = 0
        self.steps = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize(seed=st.integers(0, 2**32 - 1), lent=st.sampled_from([LENT, 40 << 10]))
    def start(self, seed: int, lent: int) -> None:
        """Owners, holders (sometimes with lent budgets too small for everything)."""
        self.faults.rng = random.Random(seed)
        for h in HOLDERS:
            self.lents[h] = LentPool(PoolConfig(budget_bytes=lent))
        for o in OWNERS:
            holders = FaultyHolders(o, INC, self.lents, self.faults)
            fs = RemoteTier(
                PoolConfig(budget_bytes=LOCAL),
                holders,
                SpillConfig(replicas=2, batch_pages=8, depth=2, repair_batch_pages=8),
                rng=random.Random(seed + len(self.owners)),
            )
            self.owners[o] = fs
            self.model[o] = {k: {ABSENT} for k in range(KEYS)}
            self.run(fs.frontswap.init(0))
        self.tasks = [self.loop.create_task(fs.spill_forever()) for fs in self.owners.values()]

    # -- helpers -------------------------------------------------------------------------------

    def faulty(self) -> bool:
        f = self.faults
        return bool(f.down or f.paused or f.lose_replies or f.fail_calls)

    def check(self, owner: str, keys: list[int], got: list[bytes | None]) -> None:
        for k, page in zip(keys, got, strict=True):
            TOTALS.loads_checked += 1
            allowed = self.model[owner][k]
            assert page in allowed, (
                f"{owner} key {k}: got {'None' if page is None else 'other bytes'}, "
                f"allowed {len(allowed)} values"
            )

    async def _settle_to(self, coro: Coroutine[Any, Any, T], turns: int) -> tuple[bool, T | None]:
        """Run coro as a task for `turns` loop turns, then cancel it; (done, result)."""
        task = self.loop.create_task(coro)
        for _ in range(turns):
            if task.done():
                break
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
            TOTALS.cancelled += 1
        with contextlib.suppress(asyncio.CancelledError, PageUnavailable):
            await task
        if task.cancelled() or task.exception() is not None:
            return False, None
        return True, task.result()

    # -- the contract ---------------------------------------------------------------------------

    @rule(owner=owner_st, keys=keys_st, v=st.integers(0, len(VALUES) - 1))
    def store(self, owner: str, keys: list[int], v: int) -> None:
        pages = [VALUES[(v + k) % len(VALUES)] for k in keys]
        ok = self.run(self.owners[owner].frontswap.store_many(0, keys, pages))
        for k, page, flag in zip(keys, pages, ok, strict=True):
            self.model[owner][k] = {page if flag else ABSENT}

    @rule(owner=owner_st, keys=keys_st, v=st.integers(0, 23), turns=st.integers(0, 30))
    def store_cancelled(self, owner: str, keys: list[int], v: int, turns: int) -> None:
        pages = [VALUES[(v + k) % len(VALUES)] for k in keys]
        _, ok = self.run(
            self._settle_to(self.owners[owner].frontswap.store_many(0, keys, pages), turns)
        )
        for i, (k, page) in enumerate(zip(keys, pages, strict=True)):
            if ok is not None:
                self.model[owner][k] = {page if ok[i] else ABSENT}
            else:  # the old copy may be gone; the new one may or may not be kept
                self.model[owner][k] = self.model[owner][k] | {page, ABSENT}

    @rule(owner=owner_st, keys=keys_st, exclusive=st.booleans())
    def load(self, owner: str, keys: list[int], exclusive: bool) -> None:
        try:
            got = self.run(self.owners[owner].frontswap.load_many(0, keys, exclusive))
        except PageUnavailable:
            TOTALS.unavailable += 1
            assert self.faulty(), "a page was unavailable with no fault on"
            return  # an exclusive load that failed freed nothing: the model stays
        self.check(owner, keys, got)
        if exclusive:
            for k, page in zip(keys, got, strict=True):
                if page is not None:
                    self.model[owner][k] = {ABSENT}

    @rule(owner=owner_st, keys=keys_st, turns=st.integers(0, 30))
    def exclusive_load_cancelled(self, owner: str, keys: list[int], turns: int) -> None:
        _, got = self.run(
            self._settle_to(self.owners[owner].frontswap.load_many(0, keys, True), turns)
        )
        if got is not None:
            self.check(owner, keys, got)
            for k, page in zip(keys, got, strict=True):
                if page is not None:
                    self.model[owner][k] = {ABSENT}
        # Cancelled or failed: nothing was freed, the model stays as it is.

    @rule(owner=owner_st, keys=keys_st)
    def invalidate(self, owner: str, keys: list[int]) -> None:
        self.run(self.owners[owner].frontswap.invalidate_many(0, keys))
        for k in keys:
            self.model[owner][k] = {ABSENT}

    @rule(owner=owner_st, keys=keys_st, turns=st.integers(0, 20))
    def store_racing_invalidate_area(self, owner: str, keys: list[int], turns: int) -> None:
        fs = self.owners[owner]
        pages = [VALUES[k % len(VALUES)] for k in keys]

        async def race() -> None:
            store = self.loop.create_task(fs.frontswap.store_many(0, keys, pages))
            for _ in range(turns):
                await asyncio.sleep(0)
            await fs.frontswap.invalidate_area(0)
            await store
            await fs.frontswap.init(0)

        self.run(race())
        # Whatever the store answered, nothing of the area's last life may come back.
        self.model[owner] = {k: {ABSENT} for k in range(KEYS)}

    # -- faults ----------------------------------------------------------------------------------

    def faulted(self) -> set[str]:
        f = self.faults
        return f.down | f.paused | set(f.lose_replies) | set(f.fail_calls)

    @precondition(lambda self: len(self.faulted()) < 2)
    @rule(h=holder_st, kind=st.sampled_from(["down", "paused", "lossy", "failing"]))
    def fault(self, h: str, kind: str) -> None:
        f = self.faults
        if kind == "down":
            f.down.add(h)
        elif kind == "paused":
            f.paused.add(h)
        elif kind == "lossy":
            f.lose_replies[h] = 0.7
        else:
            f.fail_calls[h] = 0.7

    @precondition(lambda self: self.faulty())
    @rule()
    def heal(self) -> None:
        self.faults.clear()

    @precondition(lambda self: not self.faulty())
    @rule(h=holder_st)
    def restart(self, h: str) -> None:
        """A holder restarts, losing every copy, once every page is fully replicated (one copy
        may be all there is when the lent budgets are full: then it does not restart, as
        invariant 1 promises nothing for a page with one copy)."""
        for fs in self.owners.values():
            self.run(self._repair_fully(fs))
        if any(fs.under_replicated(set()) for fs in self.owners.values()):
            TOTALS.restarts_skipped += 1
            return
        self.lents[h] = LentPool(PoolConfig(budget_bytes=self.lents[h].pool.config.budget_bytes))
        self.restarts += 1
        for fs in self.owners.values():
            fs.holder_restarted(NodeId(h), Incarnation(f"old{self.restarts}"))

    async def _repair_fully(self, fs: RemoteTier) -> None:
        gone = set(self.faults.down)
        for _ in range(20):
            if not fs.under_replicated(gone):
                return
            await fs.repair(gone)

    @rule(owner=owner_st)
    def repair(self, owner: str) -> None:
        """What the coordinator orders: re-replicate what lost a copy or has too few."""
        fs = self.owners[owner]
        self.run(fs.repair(set(self.faults.down)))

    @rule(owner=owner_st)
    def spill(self, owner: str) -> None:
        self.run(self.owners[owner].spill_once())

    @invariant()
    def count(self) -> None:
        self.steps += 1

    # -- quiescence ------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.owners:
                self.faults.clear()
                self.run(self._quiesce())
        finally:
            for task in self.tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
            self.loop.close()
            TOTALS.steps += self.steps
            TOTALS.faults += self.faults.injected
            TOTALS.calls += self.faults.calls
            TOTALS.runs.append(self.steps)

    async def _quiesce(self) -> None:
        # Quiet first: a spill on the wire would be a copy the owner does not reference yet.
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for fs in self.owners.values():
            await self._repair_fully(fs)
            assert await fs.settle_drops()
        for owner, fs in self.owners.items():
            keys = list(range(KEYS))
            got = await fs.frontswap.load_many(0, keys)
            self.check(owner, keys, got)
            # The holders keep exactly the copies this owner references, no more, no less.
            referenced: dict[str, set[tuple[int, int]]] = {h: set() for h in HOLDERS}
            for i, version, _, set_id in fs.pool.remote_entries(0, keys):
                for h in fs.holder_set(set_id):
                    if h in referenced:
                        referenced[h].add((keys[i], version))
            for h, lent in self.lents.items():
                held = lent.get(owner, INC, [0] * KEYS, keys)
                kept = {(k, item[0]) for k, item in zip(keys, held, strict=True) if item}
                assert kept == referenced[h], (owner, h, kept ^ referenced[h])


TestRemoteTierUnderFaults = RemoteTierUnderFaults.TestCase
TestRemoteTierUnderFaults.settings = settings(
    max_examples=int(os.environ.get("RAMSTER_MODEL_EXAMPLES", "60")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_the_runs_injected_faults() -> None:
    """Runs after the machine (file order): the faults really happened."""
    if not TOTALS.runs:
        return  # the machine was deselected
    print(
        f"model under faults: {len(TOTALS.runs)} runs, {TOTALS.steps} steps, "
        f"{TOTALS.calls} holder calls, {TOTALS.faults} faults injected, "
        f"{TOTALS.cancelled} cancellations, {TOTALS.loads_checked} pages checked, "
        f"{TOTALS.unavailable} loads unavailable during faults"
    )
    assert TOTALS.faults > 0 and TOTALS.cancelled > 0
