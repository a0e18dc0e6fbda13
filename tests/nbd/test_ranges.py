"""Range locks: overlapping mutations run in the order they came, others at once; a waiter
that is cancelled lets the ones behind it go, never past the ones before it."""

from __future__ import annotations

import asyncio
import random

import pytest

from ramster.nbd.ranges import EVERYTHING, RangeLocks, pages_of


async def _op(
    locks: RangeLocks, ranges: list[tuple[int, int]], log: list[str], name: str, gate: asyncio.Event
) -> None:
    async with locks.hold(ranges):
        log.append(f"{name}+")
        await gate.wait()
        log.append(f"{name}-")


@pytest.mark.asyncio
async def test_disjoint_ranges_run_at_once_and_overlapping_ones_in_order() -> None:
    locks = RangeLocks()
    log: list[str] = []
    gates = {n: asyncio.Event() for n in "abc"}
    a = asyncio.create_task(_op(locks, [(0, 4)], log, "a", gates["a"]))
    b = asyncio.create_task(_op(locks, [(4, 8)], log, "b", gates["b"]))
    c = asyncio.create_task(_op(locks, [(3, 5)], log, "c", gates["c"]))  # overlaps both
    await asyncio.sleep(0.01)
    assert log == ["a+", "b+"], "disjoint ranges must not wait for each other"
    gates["b"].set()
    await asyncio.sleep(0.01)
    assert log == ["a+", "b+", "b-"], "c must still wait for a, which came before it"
    gates["a"].set()
    gates["c"].set()
    await asyncio.gather(a, b, c)
    assert log == ["a+", "b+", "b-", "a-", "c+", "c-"]
    assert not len(locks)


@pytest.mark.asyncio
async def test_a_later_overlapping_op_never_overtakes_a_waiting_one() -> None:
    locks = RangeLocks()
    log: list[str] = []
    gates = {n: asyncio.Event() for n in "abc"}
    a = asyncio.create_task(_op(locks, [(0, 10)], log, "a", gates["a"]))
    b = asyncio.create_task(_op(locks, [(5, 6)], log, "b", gates["b"]))
    c = asyncio.create_task(_op(locks, [(5, 6)], log, "c", gates["c"]))
    await asyncio.sleep(0.01)
    for g in gates.values():
        g.set()
    await asyncio.gather(a, b, c)
    assert log == ["a+", "a-", "b+", "b-", "c+", "c-"]


@pytest.mark.asyncio
async def test_a_cancelled_waiter_releases_what_it_waited_for() -> None:
    locks = RangeLocks()
    log: list[str] = []
    gates = {n: asyncio.Event() for n in "abc"}
    a = asyncio.create_task(_op(locks, [(0, 2)], log, "a", gates["a"]))
    b = asyncio.create_task(_op(locks, [(1, 3)], log, "b", gates["b"]))
    c = asyncio.create_task(_op(locks, [(0, 1)], log, "c", gates["c"]))  # behind a (and b)
    await asyncio.sleep(0.01)
    b.cancel()
    await asyncio.sleep(0.01)
    assert log == ["a+"], "c overlaps a: cancelling b must not let it past a"
    gates["a"].set()
    gates["c"].set()
    await asyncio.gather(a, c)
    assert log == ["a+", "a-", "c+", "c-"]
    assert b.cancelled() and not len(locks)


@pytest.mark.asyncio
async def test_a_barrier_waits_for_everything_before_it_and_holds_up_everything_after() -> None:
    locks = RangeLocks()
    log: list[str] = []
    gates = {n: asyncio.Event() for n in "abc"}
    a = asyncio.create_task(_op(locks, [(7, 8)], log, "a", gates["a"]))
    b = asyncio.create_task(_op(locks, list(EVERYTHING), log, "b", gates["b"]))
    c = asyncio.create_task(_op(locks, [(1 << 40, (1 << 40) + 1)], log, "c", gates["c"]))
    await asyncio.sleep(0.01)
    assert log == ["a+"]
    for g in gates.values():
        g.set()
    await asyncio.gather(a, b, c)
    assert log == ["a+", "a-", "b+", "b-", "c+", "c-"]


@pytest.mark.asyncio
async def test_random_operations_keep_per_page_order() -> None:
    """Many operations on few pages: each page sees its operations in the order they came,
    and no two holders of one page ever overlap."""
    rng = random.Random(7)
    locks = RangeLocks()
    holding: dict[int, int] = {}
    seen: dict[int, list[int]] = {}
    wanted: dict[int, list[int]] = {}

    async def op(n: int, first: int, end: int) -> None:
        async with locks.hold([(first, end)]):
            for p in range(first, end):
                assert p not in holding, f"page {p} held by {holding[p]} and {n}"
                holding[p] = n
                seen.setdefault(p, []).append(n)
            await asyncio.sleep(rng.random() / 1000)
            for p in range(first, end):
                del holding[p]

    tasks = []
    for n in range(300):
        first = rng.randrange(16)
        end = first + rng.randrange(1, 4)
        for p in range(first, end):
            wanted.setdefault(p, []).append(n)
        tasks.append(asyncio.create_task(op(n, first, end)))
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert seen == wanted
    assert not len(locks)


def test_pages_of_a_byte_range() -> None:
    assert pages_of(0, 4096, 4096) == (0, 1)
    assert pages_of(100, 10, 4096) == (0, 1)
    assert pages_of(4000, 200, 4096) == (0, 2)
    assert pages_of(8192, 0, 4096) == (2, 2)
