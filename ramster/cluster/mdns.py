"""mDNS discovery (the only module that imports zeroconf): announce this node, find peers.

Found peers are only *hints*: they are handed to `on_found(node_id, host, port)`, and the
peer table admits them only through the authenticated RPC handshake and heartbeats. mDNS
goodbyes are ignored for liveness (after kill -9 a record lingers for ~19 minutes).
Multicast goes only to the interfaces named: announcing on every interface of a host is the
operator's decision, not a default.

Anyone on the link can announce, so everything here is bounded: at most MAX_RESOLVING
lookups at once (names beyond wait in a bounded queue, the oldest dropped), a table of at most
MAX_ANNOUNCERS announcers that expire, and a service's records are removed from zeroconf's
cache (and its refresh queries cancelled) once looked at: what a hint needs is in the table,
so a flood of announcements costs neither memory nor a task per name. A live node that is
forgotten here is found again when it next answers or announces.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import socket
import time
from collections.abc import Callable

from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ramster.rpc.const import PROTOCOL_VERSION

log = logging.getLogger(__name__)

SERVICE_TYPE = "_ramster._tcp.local."
LOOKUP_MS = 3000
"""How long to wait for a found service's records (ms); probing takes about 1.2 s."""
MAX_RESOLVING = 4
"""Service lookups at once; each waits up to LOOKUP_MS for records."""
MAX_QUEUED = 256
"""Names waiting for a lookup; past it the oldest is dropped (a live node announces again)."""
MAX_ANNOUNCERS = 64
"""Announcers of our cluster remembered (node -> address), so that a repeat is not a new hint."""
ANNOUNCER_TTL = 300.0
"""Seconds an announcer is remembered without being seen again."""


def _compact(scheduler: object) -> None:
    """Drop cancelled refreshes from zeroconf's query heap: it keeps them until they are due
    (80% of a TTL the announcer chose), which a flood would turn into unbounded memory."""
    heap = getattr(scheduler, "_query_heap", None)
    live = getattr(scheduler, "_next_scheduled_for_alias", None)
    if not isinstance(heap, list) or not isinstance(live, dict):
        return
    if len(heap) > 2 * len(live) + 64:  # amortised: rebuilt after as many cancels as entries
        heap[:] = [q for q in heap if not getattr(q, "cancelled", False)]
        heapq.heapify(heap)


def _txt(props: dict[bytes, bytes | None], key: bytes) -> str:
    value = props.get(key)
    return value.decode("utf-8", "replace") if value else ""


class MdnsDiscovery:
    """Announce `node_id` of `cluster` at host:port and report other members as they appear."""

    def __init__(
        self,
        cluster: str,
        node_id: str,
        incarnation: str,
        host: str,
        port: int,
        interface: str,
        on_found: Callable[[str, str, int], None],
        admin_port: int = 0,
    ) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.incarnation = incarnation
        self.host = host
        self.port = port
        self.interface = interface
        self.on_found = on_found
        self.admin_port = admin_port
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._queue: dict[str, str] = {}
        """Names waiting for a lookup (name -> service type), oldest first."""
        self.found: dict[str, tuple[str, int, float]] = {}
        """node -> (host, port, last seen): announcers of this cluster, oldest first."""
        self.counters = dict.fromkeys(
            ("announcements", "dropped", "looked_up", "foreign", "hints"), 0
        )

    @property
    def queued(self) -> int:
        """Names waiting for a lookup, and lookups running."""
        return len(self._queue) + len(self._tasks)

    def _interfaces(self) -> list[str] | None:
        if self.interface == "all":
            return None
        return [self.interface]

    def _address(self) -> str:
        if self.host not in ("0.0.0.0", ""):
            return self.host
        if self.interface not in ("all",) and self.interface.replace(".", "").isdigit():
            return self.interface
        return socket.gethostbyname(socket.gethostname())

    async def start(self) -> bool:
        """Announce and browse; False (one clear log line) when multicast is unavailable."""
        try:
            interfaces = self._interfaces()
            self._azc = (
                AsyncZeroconf(ip_version=IPVersion.V4Only)
                if interfaces is None
                else AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            )
            self._info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{self.cluster}-{self.node_id}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton(self._address())],
                port=self.port,
                properties={
                    "cluster": self.cluster,
                    "node": self.node_id,
                    "inc": self.incarnation,
                    "rpc": str(self.port),
                    "admin": str(self.admin_port),
                    "proto": str(PROTOCOL_VERSION),
                },
            )
            announced = await self._azc.async_register_service(self._info)
            await announced  # probing done: the name is ours
            self._browser = AsyncServiceBrowser(
                self._azc.zeroconf,
                SERVICE_TYPE,
                handlers=[self._on_change],
                question_type=DNSQuestionType.QM,
            )
        except (OSError, RuntimeError) as exc:
            log.warning(
                "mDNS unavailable on %s (%s): discovery off, static --peer seeds still work",
                self.interface,
                exc,
            )
            await self.close()
            return False
        log.info("mDNS: announcing %s on %s", self._info.name, self.interface)
        return True

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            return  # a hint only: liveness comes from heartbeats
        self.counters["announcements"] += 1
        queue = self._queue
        queue.pop(name, None)
        if len(queue) >= MAX_QUEUED:
            oldest = next(iter(queue))
            del queue[oldest]
            self._forget(oldest)
            self.counters["dropped"] += 1
        queue[name] = service_type
        self._pump()

    def _pump(self) -> None:
        while self._queue and len(self._tasks) < MAX_RESOLVING:
            name = next(iter(self._queue))
            service_type = self._queue.pop(name)
            task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
            self._tasks.add(task)
            task.add_done_callback(self._resolved)

    def _resolved(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._azc is not None:
            self._pump()

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._azc is None:
            return
        self.counters["looked_up"] += 1
        info = AsyncServiceInfo(service_type, name)
        try:
            if await info.async_request(
                self._azc.zeroconf, LOOKUP_MS, question_type=DNSQuestionType.QM
            ) and not self._consider(info):
                self.counters["foreign"] += 1
        finally:
            self._forget(name, info.server)

    def _consider(self, info: AsyncServiceInfo) -> bool:
        """Hand a looked-up service of this cluster on as a hint; False if it is not ours."""
        props = info.properties
        cluster, node = _txt(props, b"cluster"), _txt(props, b"node")
        if cluster == self.cluster and node == self.node_id:
            return True  # our own announcement
        if cluster != self.cluster or not node:
            return False
        if _txt(props, b"proto") != str(PROTOCOL_VERSION):
            log.debug("mDNS: %s speaks protocol %s; ignored", node, _txt(props, b"proto"))
            return False
        addresses = info.parsed_addresses(IPVersion.V4Only)
        if not addresses or not info.port:
            return False
        host, port, now = addresses[0], info.port, time.monotonic()
        found = self.found
        for old in [n for n, (_, _, seen) in found.items() if now - seen > ANNOUNCER_TTL]:
            del found[old]
        known = found.pop(node, None)
        if len(found) >= MAX_ANNOUNCERS:
            del found[next(iter(found))]
        found[node] = (host, port, now)
        if known is not None and known[:2] == (host, port):
            return True
        self.counters["hints"] += 1
        log.info("mDNS: %s announces itself at %s:%d (a hint until it authenticates)", node,
                 host, port)  # fmt: skip
        self.on_found(node, host, port)
        return True

    def _forget(self, name: str, server: str | None = None) -> None:
        """Remove a looked-up (or dropped) service from zeroconf's cache and its refresh
        schedule: a flood of records must not stay."""
        if self._azc is None:
            return
        cache = self._azc.zeroconf.cache
        pointers = [
            r
            for r in cache.async_entries_with_name(SERVICE_TYPE)
            if getattr(r, "alias", "") == name
        ]
        records = cache.async_entries_with_name(name)
        stale = [*pointers, *records]
        own = self._info.server if self._info is not None else None
        servers = {server} | {getattr(r, "server", None) for r in records}
        for host in servers - {None, own}:
            stale += cache.async_entries_with_name(host)  # type: ignore[arg-type]
        if stale:
            cache.async_remove_records(stale)
        scheduler = getattr(self._browser, "query_scheduler", None)
        cancel = getattr(scheduler, "cancel_ptr_refresh", None)
        if cancel is not None:  # zeroconf's browser schedules a refresh query per pointer
            for pointer in pointers:
                cancel(pointer)
            _compact(scheduler)

    async def close(self) -> None:
        """Say goodbye and stop browsing (idempotent)."""
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            if self._info is not None:
                try:
                    goodbye = await self._azc.async_unregister_service(self._info)
                    await goodbye
                except (OSError, RuntimeError) as exc:
                    log.debug("mDNS goodbye failed: %s", exc)
            await self._azc.async_close()
            self._azc = None
