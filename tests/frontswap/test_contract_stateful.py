"""The frontswap contract against a dict model, driven by hypothesis through thousands of steps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ramster.frontswap import LocalFrontswap
from ramster.pagestore import PoolConfig

T = TypeVar("T")
PAGE = 512
AREAS = 3
OFFSETS = st.integers(min_value=0, max_value=40)
CI = os.environ.get("CI") == "true" or os.environ.get("RAMSTER_REQUIRE_ALL") == "1"


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    """Pages of every kind the pool treats differently."""
    kind = draw(st.sampled_from(["zero", "same", "text", "random", "near-same"]))
    if kind == "zero":
        return bytes(PAGE)
    if kind == "same":
        return draw(st.binary(min_size=8, max_size=8)) * (PAGE // 8)
    if kind == "text":
        word = draw(st.binary(min_size=1, max_size=24))
        return (word * (PAGE // len(word) + 1))[:PAGE]
    if kind == "random":
        return draw(st.binary(min_size=PAGE, max_size=PAGE))
    base = bytearray(draw(st.binary(min_size=8, max_size=8)) * (PAGE // 8))
    base[draw(st.integers(0, PAGE - 1))] ^= 0x5A
    return bytes(base)


class FrontswapMachine(RuleBasedStateMachine):
    """Every result must match what a dict of the acknowledged pages says."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # A small budget so that refusals and the hysteresis happen during the run.
        self.budget = 24 << 10
        self.fs = LocalFrontswap(
            PoolConfig(page_size=PAGE, budget_bytes=self.budget), max_areas=AREAS
        )
        self.model: dict[tuple[int, int], bytes] = {}
        self.live_areas: set[int] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    @initialize()
    def start(self) -> None:
        self.run(self.fs.init(0))
        self.live_areas.add(0)

    @rule(area=st.integers(0, AREAS - 1))
    def init(self, area: int) -> None:
        self.run(self.fs.init(area))
        self.live_areas.add(area)

    @rule(area=st.integers(0, AREAS - 1), offset=OFFSETS, page=pages())
    def store(self, area: int, offset: int, page: bytes) -> None:
        ok = self.run(self.fs.store(area, offset, page))
        if area not in self.live_areas:
            assert ok is False
        if ok:
            self.model[(area, offset)] = page
        else:
            self.model.pop((area, offset), None)

    @rule(
        area=st.integers(0, AREAS - 1),
        batch=st.lists(st.tuples(OFFSETS, pages()), min_size=1, max_size=12),
    )
    def store_many(self, area: int, batch: list[tuple[int, bytes]]) -> None:
        offsets = [o for o, _ in batch]
        results = self.run(self.fs.store_many(area, offsets, [p for _, p in batch]))
        assert len(results) == len(batch)
        for (offset, page), ok in zip(batch, results, strict=True):
            if ok:
                self.model[(area, offset)] = page
            else:
                self.model.pop((area, offset), None)

    @rule(area=st.integers(0, AREAS - 1), offset=OFFSETS, exclusive=st.booleans())
    def load(self, area: int, offset: int, exclusive: bool) -> None:
        got = self.run(self.fs.load(area, offset, exclusive=exclusive))
        assert got == self.model.get((area, offset))
        if exclusive:
            self.model.pop((area, offset), None)

    @rule(
        area=st.integers(0, AREAS - 1),
        offsets=st.lists(OFFSETS, min_size=1, max_size=16),
        exclusive=st.booleans(),
    )
    def load_many(self, area: int, offsets: list[int], exclusive: bool) -> None:
        got = self.run(self.fs.load_many(area, offsets, exclusive=exclusive))
        for offset, page in zip(offsets, got, strict=True):
            assert page == self.model.get((area, offset))
            if exclusive:
                self.model.pop((area, offset), None)

    @rule(area=st.integers(0, AREAS - 1), offset=OFFSETS)
    def invalidate_page(self, area: int, offset: int) -> None:
        self.run(self.fs.invalidate_page(area, offset))
        self.model.pop((area, offset), None)

    @rule(area=st.integers(0, AREAS - 1), offsets=st.lists(OFFSETS, max_size=16))
    def invalidate_many(self, area: int, offsets: list[int]) -> None:
        self.run(self.fs.invalidate_many(area, offsets))
        for offset in offsets:
            self.model.pop((area, offset), None)

    @precondition(lambda self: bool(self.live_areas))
    @rule(area=st.integers(0, AREAS - 1))
    def invalidate_area(self, area: int) -> None:
        self.run(self.fs.invalidate_area(area))
        self.live_areas.discard(area)
        for key in [k for k in self.model if k[0] == area]:
            del self.model[key]

    @invariant()
    def within_budget_and_counted(self) -> None:
        st_ = self.fs.statistics().pool
        assert st_.pool_total_size <= self.budget
        assert st_.stored_pages == len(self.model)
        assert st_.checksum_failures == 0

    @invariant()
    def everything_acknowledged_is_there(self) -> None:
        if len(self.model) % 7:
            return  # a full sweep on some steps keeps the run fast
        for (area, offset), page in self.model.items():
            assert self.run(self.fs.load(area, offset)) == page


FrontswapMachine.TestCase.settings = settings(
    max_examples=300 if CI else 60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFrontswapContract = FrontswapMachine.TestCase
