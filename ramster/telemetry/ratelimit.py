"""Repeated log lines, one per key and interval, with a count of what was held back: a holder
that stays unreachable costs one line every few seconds, not one per call."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

EVERY = 10.0
"""Seconds between two lines of one key."""
MAX_KEYS = 1024
"""Keys remembered; past that the oldest are forgotten (a flood of distinct keys stays small)."""


class LogLimiter:
    """A logger's lines, rate-limited per key."""

    def __init__(self, logger: logging.Logger, every: float = EVERY) -> None:
        self._log = logger
        self._every = every
        self._last: dict[Hashable, tuple[float, int]] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log unless this key logged within `every` seconds (then count it); True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._every:
            self._last[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        if len(self._last) >= MAX_KEYS and key not in self._last:
            self._last.pop(next(iter(self._last)))
        self._last.pop(key, None)
        self._last[key] = (now, 0)
        if held:
            msg = f"{msg} ({held} more like it in the last {self._every:.0f} s)"
        self._log.log(level, msg, *args)
        return True

    def info(self, key: Hashable, msg: str, *args: object) -> bool:
        """`log` at INFO."""
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        """`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        """`log` at ERROR."""
        return self.log(logging.ERROR, key, msg, *args)
