"""Which connections a server keeps, without I/O: connections that have not finished their
handshake are capped per source address and in total, apart from authenticated ones, so that
junk can never take an authenticated peer's slot (nginx's `limit_conn` per address, uvicorn's
`limit_concurrency`)."""

from __future__ import annotations

import collections
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps (see RpcConfig)."""

    max_connections: int
    max_unauthenticated: int
    max_unauthenticated_per_source: int


class Admission(Generic[C]):
    """Unauthenticated connections oldest first, per-source counts, authenticated ones."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._unauthenticated: dict[C, str] = {}
        self._sources: collections.Counter[str] = collections.Counter()
        self._authenticated: set[C] = set()
        self.evicted = 0
        """Unauthenticated connections dropped to make room for a newer one."""

    @property
    def unauthenticated(self) -> int:
        """Connections still in their handshake."""
        return len(self._unauthenticated)

    @property
    def authenticated(self) -> int:
        """Connections past their handshake."""
        return len(self._authenticated)

    def arrive(self, conn: C, source: str) -> tuple[bool, C | None]:
        """A new connection from `source`: (admitted?, the connection evicted for it, if any).

        Refused when its source already has its share of handshakes under way; when all
        unauthenticated slots are taken the oldest handshake is evicted instead: a real peer
        finishes within one round trip, a junk connection waits for the deadline."""
        if self._sources[source] >= self.limits.max_unauthenticated_per_source:
            return False, None
        evicted: C | None = None
        if len(self._unauthenticated) >= self.limits.max_unauthenticated:
            evicted = next(iter(self._unauthenticated))
            self.leave(evicted)
            self.evicted += 1
        self._unauthenticated[conn] = source
        self._sources[source] += 1
        return True, evicted

    def authenticate(self, conn: C) -> bool:
        """conn finished its handshake; False (and it is forgotten) when the server is full."""
        if not self._drop_unauthenticated(conn):
            return False  # evicted meanwhile, or never admitted
        if len(self._authenticated) >= self.limits.max_connections:
            return False
        self._authenticated.add(conn)
        return True

    def leave(self, conn: C) -> None:
        """conn is gone (idempotent)."""
        self._drop_unauthenticated(conn)
        self._authenticated.discard(conn)

    def _drop_unauthenticated(self, conn: C) -> bool:
        source = self._unauthenticated.pop(conn, None)
        if source is None:
            return False
        self._sources[source] -= 1
        if self._sources[source] <= 0:
            del self._sources[source]
        return True
