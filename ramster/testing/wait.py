"""Waiting for a condition instead of sleeping and hoping: one helper for every poll."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

POLL = 0.05
"""Seconds between two looks at a condition: short next to any timeout a test uses."""


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    within: float = ...,
    what: str = ...,
    every: float = ...,
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T],
    within: float = ...,
    what: str = ...,
    every: float = ...,
) -> T: ...


async def wait_until(
    condition: Callable[[], Any],
    within: float = 10.0,
    what: str = "condition",
    every: float = POLL,
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy, and return that.

    TimeoutError naming `what` and the last value seen when it does not hold within `within`
    seconds. Exceptions from the condition propagate: catch them in the condition if they
    mean "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(f"{what} not met within {within} s (last: {value!r:.200})")
        await asyncio.sleep(every)
