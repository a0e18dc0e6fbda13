"""The node's event log: joins, deaths, elections, orders, refusals. Bounded, with bounded
subscribers (a slow reader loses its oldest events, counted, never stalls the node)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_EVENTS = 1000
"""Events kept for `recent()`."""
MAX_SUBSCRIBERS = 64
SUBSCRIBER_QUEUE = 256


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened; `id` rises by one per event of this node."""

    id: int
    time: float
    kind: str
    node: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """As plain data."""
        return asdict(self)


class TooManySubscribers(Exception):
    """More than MAX_SUBSCRIBERS streams are open."""


class EventLog:
    """Recent events of one node, and live streams of new ones."""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self._events: deque[Event] = deque(maxlen=limit)
        self._next = 1
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self.dropped = 0
        """Events a slow subscriber did not get."""

    def add(self, kind: str, node: str, detail: str = "", level: int = logging.INFO) -> Event:
        """Record an event, log it, and hand it to every subscriber."""
        event = Event(self._next, time.time(), kind, node, detail)
        self._next += 1
        self._events.append(event)
        log.log(level, "event %s node=%s %s", kind, node, detail)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
        return event

    def recent(self, after: int = 0, limit: int = MAX_EVENTS) -> list[Event]:
        """Events with id above `after`, oldest first, at most `limit` (the newest ones)."""
        out = [e for e in self._events if e.id > after]
        return out[-limit:] if limit > 0 else []

    def subscribe(self) -> asyncio.Queue[Event]:
        """A queue that receives every new event until `unsubscribe`."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers(f"at most {MAX_SUBSCRIBERS} event streams at once")
        queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        """Stop feeding a queue."""
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        """Open streams."""
        return len(self._subscribers)
