"""The byte budget that makes disk writers wait: bounded, first come first served, cancellable."""

from __future__ import annotations

import asyncio

import pytest

from ramster.disk.flow import ByteBudget, DiskConfig


@pytest.mark.asyncio
async def test_waiters_are_served_in_order_and_within_the_limit() -> None:
    budget = ByteBudget(100)
    await budget.acquire(60)
    order: list[int] = []

    async def take(n: int) -> None:
        await budget.acquire(n)
        order.append(n)

    big = asyncio.create_task(take(90))
    await asyncio.sleep(0)
    small = asyncio.create_task(take(10))  # fits now, but waits behind the bigger one
    await asyncio.sleep(0)
    assert order == []
    assert budget.waiting == 2
    budget.release(60)
    await asyncio.gather(big, small)
    assert order == [90, 10]
    assert budget.used == 100 == budget.peak


@pytest.mark.asyncio
async def test_a_cancelled_waiter_lets_the_next_one_in() -> None:
    budget = ByteBudget(100)
    await budget.acquire(50)
    big = asyncio.create_task(budget.acquire(80))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.acquire(30))
    await asyncio.sleep(0)
    assert not small.done()
    big.cancel()
    await asyncio.sleep(0)
    await small
    assert budget.used == 80
    assert budget.waiting == 0
    with pytest.raises(ValueError, match="cannot take"):
        await budget.acquire(101)


def test_config_bounds_are_checked() -> None:
    DiskConfig()
    with pytest.raises(ValueError, match="max_write_bytes"):
        DiskConfig(max_write_bytes=1 << 20, max_inflight_bytes=1 << 19)
    with pytest.raises(ValueError, match="max_write_bytes"):
        DiskConfig(max_payload=1 << 20)
    with pytest.raises(ValueError, match="max_read_bytes"):
        DiskConfig(max_read_bytes=4096)
