"""The composition root: one node builds and owns every subsystem.

Node ─┬─ RpcServer (node.*, hold.*, fs.*, coord.* methods; see ramster.service)
      ├─ ClusterFrontswap (local pool + spiller + remote loads) ── Peers (heartbeats, holder calls)
      ├─ LentPool (other owners' pages)
      ├─ Election ── CoordinatorDriver (while elected: Coordinator state machine, sends orders)
      └─ OrderFollower (carries out the orders this node receives: repair, move)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from ramster import __version__
from ramster.admin import AdminServer
from ramster.cluster.coordinator import order_from_wire
from ramster.cluster.driver import CoordinatorDriver, OrderFollower
from ramster.cluster.election import Election, View
from ramster.cluster.mdns import MdnsDiscovery
from ramster.cluster.membership import State, Transition
from ramster.cluster.peers import Peers
from ramster.config import NodeConfig, new_incarnation, node_id_for
from ramster.errors import ProtocolError
from ramster.events import EventLog
from ramster.frontswap.remote import ClusterFrontswap, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.rpc import RpcConfig, RpcServer, Secret

log = logging.getLogger(__name__)

REFUSAL_EVENT_EVERY = 10.0
"""Seconds between two refusal events for one owner and reason (a full pool refuses a lot)."""
STATS_EVENTS = 50
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
"""Listen addresses that are no address to reach a node at."""
"""Recent cluster events in a stats answer (the coordinator keeps more)."""


class Node:
    """One ramster node; `start()` returns when it serves, `close()` is idempotent."""

    def __init__(self, config: NodeConfig, secret: Secret) -> None:
        from ramster import service

        self.config = config
        self.node_id = node_id_for(config)
        self.incarnation = new_incarnation()
        self.started_at = time.time()
        rpc_config = RpcConfig(cluster=config.cluster)
        self.server = RpcServer(secret, rpc_config, host=config.host, port=config.port)
        self.lent = LentPool(
            PoolConfig(page_size=config.page_size, budget_bytes=config.lent_budget)
        )
        self.events = EventLog()
        self.peers = Peers(
            self.node_id,
            self.incarnation,
            secret,
            rpc_config,
            config.peers,
            config.heartbeat,
            config.dead_after,
        )
        self.frontswap = ClusterFrontswap(
            PoolConfig(page_size=config.page_size, budget_bytes=config.local_budget),
            self.peers,
            SpillConfig(
                replicas=config.replicas,
                high_watermark=config.high_watermark,
                low_watermark=config.low_watermark,
            ),
        )
        self.peers.on_restart = self.frontswap.holder_restarted
        self.peers.on_transition = self._peer_changed
        service.register(self)
        self.discovery: MdnsDiscovery | None = None
        self.election = Election(self.node_id)
        self.follower = OrderFollower(self.frontswap, self.peers.present, config.dead_after)
        self.driver = CoordinatorDriver(
            self.election,
            self._reports,
            self.peers.order,
            self.follower,
            config.heartbeat,
            self.peers.changed,
            self.events.add,
        )
        self.orders_refused = 0
        self.nbd_statistics: Callable[[], object] | None = None
        """Set by whoever serves NBD exports of this node (run_node), for stats and /metrics."""
        self.copies_refused = 0
        """Copies a hold.copy asked for that this holder did not have, or had stale or bad."""
        self._refused: dict[tuple[str, str], int] = {}
        self._refused_at: dict[tuple[str, str], float] = {}
        self.admin_address: str | None = None
        """host:port of the admin API once it listens."""
        self.admin: AdminServer | None = None
        if config.admin_listen is not None:
            # Built here so that a refused bind (no token off loopback) stops the start.
            self.admin = AdminServer(self, config.admin_listen, config.admin_token())
        self._own_host: str | None = None
        self._inventory_at = -1e9
        self._inventory_cache: dict[str, Any] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        """Serving: started and not closing."""
        return self._runner is not None and not self._runner.done() and not self._closed

    @property
    def role(self) -> str:
        """coordinator or member."""
        return "coordinator" if self.election.is_coordinator else "member"

    @property
    def address(self) -> str:
        """host:port the RPC server really listens on."""
        return f"{self.server.host}:{self.server.port}"

    @property
    def advertised_address(self) -> str:
        """host:port others reach the RPC server at (see `advertised_host`)."""
        return f"{self.advertised_host(self.server.host)}:{self.server.port}"

    def advertised_host(self, host: str) -> str:
        """--advertise if given; for a wildcard listen address, this host's own address."""
        if self.config.advertise:
            return self.config.advertise
        if host not in WILDCARDS:
            return host
        if self._own_host is None:  # resolved once: it may ask a resolver
            try:
                self._own_host = socket.gethostbyname(socket.gethostname())
            except OSError:
                self._own_host = host
        return self._own_host

    async def start(self) -> None:
        """Listen, start heartbeats and the spiller; returns when the node serves."""
        await self.server.start()
        self._runner = asyncio.create_task(self._run(), name=f"node-{self.node_id}")
        if self.admin is not None:
            await self.admin.start()
            self.admin_address = f"{self.advertised_host(self.admin.host)}:{self.admin.port}"
        if self.config.mdns_interface:
            self.discovery = MdnsDiscovery(
                self.config.cluster,
                self.node_id,
                self.incarnation,
                self.server.host,
                self.server.port,
                self.config.mdns_interface,
                on_found=lambda _node, host, port: self._found(f"{host}:{port}"),
            )
            if not await self.discovery.start():
                self.discovery = None
        log.info(
            "node ready node=%s incarnation=%s rpc=%s cluster=%s local_budget=%d lent_budget=%d "
            "replicas=%d peers=%s",
            self.node_id,
            self.incarnation,
            self.address,
            self.config.cluster,
            self.config.local_budget,
            self.config.lent_budget,
            self.config.replicas,
            ",".join(self.config.peers) or "-",
        )

    def _found(self, address: str) -> None:
        if address not in (self.address, self.advertised_address) and self.peers.add_peer(address):
            log.info("discovered peer %s", address)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.peers.run(), name="heartbeats")
            tg.create_task(self.frontswap.spill_forever(), name="spiller")
            tg.create_task(self._orphans_forever(), name="orphans")
            tg.create_task(self._reclaim_forever(), name="reclaim")
            tg.create_task(self._elect_forever(), name="election")
            tg.create_task(self.driver.run(), name="coordinator")
            tg.create_task(self.follower.run(), name="orders")

    async def _elect_forever(self) -> None:
        """Follow who coordinates: the lowest live node id, with terms that only rise."""
        while True:
            await asyncio.sleep(min(0.1, self.config.heartbeat))
            alive = self.peers.alive()
            views = {
                p.node_id: View(str(p.info["coordinator"]), int(p.info["term"]))
                for p in self.peers.peers()
                if p.node_id in alive and "coordinator" in p.info and "term" in p.info
            }
            new = self.election.update(alive, views)
            if new is not None:
                self.events.add("coordinator", new.coordinator, f"term {new.term}")

    async def _reclaim_forever(self) -> None:
        """Drop the pages of owners silent for longer than owner_grace."""
        while True:
            await asyncio.sleep(self.config.heartbeat)
            self.lent.reclaim_silent(time.monotonic(), self.config.owner_grace)

    async def _orphans_forever(self) -> None:
        """Drop the copies re-replicated away from holders that answer again."""
        while True:
            await asyncio.sleep(self.config.heartbeat)
            if self.frontswap.orphans_pending():
                await self.frontswap.drop_orphans(self.peers.alive())

    def refused(self, owner: str, pages: int, reason: str) -> None:
        """Count pages refused to an owner; an event at most every REFUSAL_EVENT_EVERY s."""
        key = (owner, reason)
        self._refused[key] = self._refused.get(key, 0) + pages
        now = time.monotonic()
        if now - self._refused_at.get(key, -1e9) >= REFUSAL_EVENT_EVERY:
            self._refused_at[key] = now
            count = self._refused.pop(key)
            self.events.add("refused", owner, f"{count} pages: {reason}", logging.WARNING)

    def _peer_changed(self, t: Transition) -> None:
        if t.new is State.SUSPECT:
            return  # the failure detector's logs say it; the event log keeps decisions
        kind = "peer-alive" if t.new is State.ALIVE else "peer-dead"
        self.events.add(kind, t.node, t.reason)

    def _reports(self) -> dict[str, dict[str, Any]]:
        """The latest heartbeat answer of every member not declared dead, this node's own too.

        A suspect member is still one: its copies are repaired only once it is dead.
        """
        present = self.peers.present()
        reports = {p.node_id: p.info for p in self.peers.peers() if p.node_id in present}
        reports[self.node_id] = self.hello_info()
        return {n: r for n, r in reports.items() if n}

    def accept_order(self, params: list[object]) -> None:
        """An order from the coordinator: checked, then queued for the follower."""
        try:
            coordinator, order = order_from_wire(params)
        except ValueError as exc:
            raise ProtocolError(f"malformed order: {exc}") from None
        if order.owner != self.node_id:
            raise ProtocolError(f"order for {order.owner} sent to {self.node_id}")
        if not self.election.accepts(order.term, coordinator):
            self.orders_refused += 1
            self.events.add("order-refused", coordinator, f"term {order.term}", logging.WARNING)
            view = self.election.view
            raise ProtocolError(
                f"stale order from {coordinator} term {order.term}: "
                f"this node follows {view.coordinator} term {view.term}"
            )
        self.follower.offer(order)

    async def wait_closed(self) -> None:
        """Return when the background tasks end (they only end on close or on a bug)."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def close(self) -> None:
        """Stop serving: background tasks first, then the server and the peer connections."""
        if self._closed:
            return
        self._closed = True
        if self.admin is not None:
            await self.admin.close()
        if self.discovery is not None:
            await self.discovery.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.server.close()
        await self.peers.close()
        log.info("node stopped node=%s", self.node_id)

    # -- what peers and operators see --------------------------------------------------------------

    def hello_info(self) -> dict[str, Any]:
        """Identity and capacity, as heartbeats carry them."""
        pool = self.frontswap.pool
        return {
            "node": self.node_id,
            "incarnation": self.incarnation,
            "cluster": self.config.cluster,
            "version": __version__,
            "lent_free": self.lent.free_bytes(),
            "lent_budget": self.config.lent_budget,
            "local_used": pool.used_bytes,
            "local_budget": self.config.local_budget,
            "page_size": self.config.page_size,
            "draining": self.lent.draining,
            "admin": self.admin_address,
            "orders_done": list(self.follower.done),
            "coordinator": self.election.view.coordinator,
            "term": self.election.view.term,
            **self._inventory(),
        }

    def _inventory(self) -> dict[str, Any]:
        # Heartbeats ask for this several times a second: scan the pool at most once a beat.
        now = time.monotonic()
        if now - self._inventory_at >= self.config.heartbeat:
            self._inventory_at = now
            self._inventory_cache = {
                "inventory": self.frontswap.inventory(),
                "under_replicated": self.frontswap.under_replicated(self.peers.gone()),
                "lent_pages": self.lent.statistics().pool.stored_pages,
                "repairing_pages": self.follower.repairing,
                "uptime_s": round(time.time() - self.started_at, 1),
                "counters": self.counters(),
            }
        return self._inventory_cache

    def nbd_view(self) -> dict[str, Any] | None:
        """The NBD server's counters as plain data (None without NBD exports)."""
        if self.nbd_statistics is None:
            return None
        st = self.nbd_statistics()
        return dataclasses.asdict(st) if dataclasses.is_dataclass(st) else None  # type: ignore[arg-type]

    def counters(self) -> dict[str, int]:
        """Monotonic counters operators turn into rates (dashboard, metrics)."""
        pool = self.frontswap.pool.statistics()
        remote = self.frontswap.remote_statistics()
        return {
            "stores": pool.succ_stores,
            "loads": pool.loads + int(remote["remote_loads"]),
            "spilled_pages": int(remote["spilled_pages"] + remote["direct_remote_stores"]),
            "remote_loads": int(remote["remote_loads"]),
            "repaired_pages": int(remote["repaired_pages"]),
            "rebalanced_pages": int(remote["rebalanced_pages"]),
        }

    async def request_rebalance(self) -> None:
        """Ask the coordinator (this node, or over the RPC) to even out the holders now."""
        coordinator = self.election.view.coordinator
        if coordinator == self.node_id:
            await self.driver.request_rebalance()
        else:
            await self.peers.rebalance(coordinator)

    def start_drain(self) -> None:
        """Take no new pages; owners see it in heartbeats and move their pages away."""
        if not self.lent.draining:
            self.lent.draining = True
            log.warning(
                "draining: refusing new pages; %d held pages to move",
                self.lent.statistics().pool.stored_pages,
            )

    def stats(self) -> dict[str, Any]:
        """Everything worth knowing about this node, as plain data."""
        fs = self.frontswap.statistics()
        pool = dataclasses.asdict(fs.pool)
        lent = self.lent.statistics()
        remote_pages = fs.pool.remote_pages
        return {
            **self.hello_info(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "address": self.advertised_address,
            "areas": list(fs.areas),
            "pool": pool,
            "metadata_bytes_per_page": round(
                fs.pool.metadata_size / max(1, fs.pool.stored_pages + remote_pages), 1
            ),
            "lent": {
                **dataclasses.asdict(lent.pool),
                "owners": lent.owners,
                "reclaimed_pages": lent.reclaimed_pages,
            },
            "remote": self.frontswap.remote_statistics(),
            "gone_peers": sorted(self.peers.gone()),
            "under_replicated_pages": self.frontswap.under_replicated(self.peers.gone()),
            "orphans_pending": self.frontswap.orphans_pending(),
            "copies_refused": self.copies_refused,
            "peers": self.peers.statistics(),
            "orders": {
                "busy": self.follower.busy,
                "repairing_pages": self.follower.repairing,
                "refused": self.orders_refused,
            },
            "nbd": self.nbd_view(),
            "aggregates": self.driver.snapshot(),
            "events": [e.to_json() for e in self.events.recent(limit=STATS_EVENTS)],
        }
