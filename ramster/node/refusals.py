"""Pages a holder refused to owners: counted always, an event at most every few seconds."""

from __future__ import annotations

import logging
import time

from ramster.telemetry.events import EventLog

REFUSAL_EVENT_EVERY = 10.0
"""Seconds between two refusal events for one owner and reason (a full pool refuses a lot)."""


class Refusals:
    """Counts refused pages per (owner, reason) and turns them into rate-limited events."""

    def __init__(self, events: EventLog, every: float = REFUSAL_EVENT_EVERY) -> None:
        self._events = events
        self._every = every
        self._count: dict[tuple[str, str], int] = {}
        self._at: dict[tuple[str, str], float] = {}

    def __call__(self, owner: str, pages: int, reason: str) -> None:
        """Count pages refused to an owner; an event at most every `every` seconds."""
        key = (owner, reason)
        self._count[key] = self._count.get(key, 0) + pages
        now = time.monotonic()
        if now - self._at.get(key, -1e9) >= self._every:
            self._at[key] = now
            count = self._count.pop(key)
            self._events.add("refused", owner, f"{count} pages: {reason}", logging.WARNING)
