"""The one place the event loop implementation is chosen: uvloop when installed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

_T = TypeVar("_T")

_uvloop: ModuleType | None
try:
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    _uvloop = None


def loop_name() -> str:
    """'uvloop' or 'asyncio': what new_event_loop() builds."""
    return "uvloop" if _uvloop is not None else "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop of the preferred implementation."""
    if _uvloop is not None:
        loop: asyncio.AbstractEventLoop = _uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """For asyncio.Runner(loop_factory=...)."""
    return new_event_loop


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """asyncio.run on the preferred loop."""
    with asyncio.Runner(loop_factory=new_event_loop, debug=debug) as runner:
        return runner.run(main)
