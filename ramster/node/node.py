"""The composition root: one node builds and owns every subsystem.

Node ─┬─ RpcServer ── handlers: holder (hold.*), frontswap (fs.*), control (node.*, coord.*)
      ├─ RemoteTier (its frontswap: local pool + spiller + remote loads) ── Peers (holder calls)
      ├─ LentPool (other owners' pages)
      ├─ Election ── CoordinatorDriver (while elected: Coordinator state machine, sends orders)
      ├─ OrderFollower (carries out the orders this node receives: repair, move)
      ├─ ExportService (factory, opener, keeper, claims) ── NbdServer (only with --nbd)
      └─ AdminServer (only when the admin API is on; it sees the node as an admin.source)

Every collaborator is passed at construction. Peers reports to the node (`PeerEvents`): what
reacts, the frontswap and the exports, is built after Peers and through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from ramster.admin.source import Coordination, Gauges, Member, UnknownNode
from ramster.cluster.coordinator import order_from_wire
from ramster.cluster.driver import CoordinatorDriver, OrderFollower
from ramster.cluster.election import Election
from ramster.cluster.mdns import MdnsDiscovery
from ramster.cluster.membership import State, Transition
from ramster.cluster.peers import Peers
from ramster.errors import ProtocolError
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.nbd import NbdServer
from ramster.node import loops, status
from ramster.node.config import NodeConfig, claim_run, new_incarnation, node_id_for
from ramster.node.export_records import ExportRecords
from ramster.node.exports import ExportService
from ramster.node.handlers import ControlService, FrontswapService, HolderService
from ramster.node.refusals import Refusals
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import incarnation_order
from ramster.rpc import Identity, RpcServer, Secret
from ramster.telemetry.events import EventLog
from ramster.types import Incarnation, NodeId

if TYPE_CHECKING:
    from ramster.admin.server import AdminServer

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
"""Listen addresses that are no address to reach a node at."""


class Node:
    """One ramster node; `start()` returns when it serves, `close()` is idempotent."""

    def __init__(self, config: NodeConfig, secret: Secret) -> None:
        self.config = config
        self.node_id = node_id_for(config)
        self.incarnation = new_incarnation()
        self.started_at = time.time()
        rpc_config = config.rpc_config()
        identity = Identity.node(self.node_id, self.incarnation)
        self.server = RpcServer(
            secret,
            rpc_config,
            host=config.host,
            port=config.port,
            identity=identity,
            client_secret=config.client_secret(),
        )
        self.lent = LentPool(
            PoolConfig(page_size=config.page_size, budget_bytes=config.lent_budget),
            twin_window=config.dead_after,
        )
        self._events = EventLog()
        self.peers = Peers(
            self.node_id,
            self.incarnation,
            secret,
            rpc_config,
            config.peers,
            config.heartbeat,
            config.dead_after,
            self,
            max_dials=config.max_dials,
        )
        self.tier = RemoteTier(
            PoolConfig(page_size=config.page_size, budget_bytes=config.local_budget),
            self.peers,
            SpillConfig(
                replicas=config.replicas,
                high_watermark=config.high_watermark,
                low_watermark=config.low_watermark,
            ),
        )
        self.frontswap = self.tier.frontswap
        self.nbd = NbdServer(config.nbd_config()) if config.nbd is not None else None
        """The NBD server of this node's exports (only with --nbd); `start_nbd()` starts it."""
        self.exports = ExportService(
            config,
            self.peers,
            self.frontswap,
            self._events.add,
            self.lent,
            ExportRecords(config.state_dir),
            self.nbd,
        )
        # A restart under the same state dir proves its predecessor dead (the lock was free):
        # holders accept it at once instead of waiting dead_after for the old one to go quiet.
        self._run_lock, self.peers.supersedes = claim_run(config, self.node_id, self.incarnation)
        self.fatal: str | None = None
        """Why this node stopped itself (another live process runs under its id)."""
        self.refusals = Refusals(self._events)
        self.holder = HolderService(
            self.node_id,
            self.lent,
            self.peers.put_for,
            self.refusals,
            test_hooks=config.test_hooks,
        )
        self.holder.register(self.server)
        FrontswapService(self.frontswap).register(self.server)
        ControlService(self, self.lent.note_owner, self.lent.epoch).register(self.server)
        self.discovery: MdnsDiscovery | None = None
        self.election = Election(self.node_id)
        self.follower = OrderFollower(
            self.tier, self.peers.present, config.dead_after, self.peers.gone
        )
        self.driver = CoordinatorDriver(
            self.election,
            self._reports,
            self.peers.order,
            self.follower,
            config.heartbeat,
            self.peers.changed,
            self._events.add,
        )
        self.orders_refused = 0
        self.admin_address: str | None = None
        """host:port of the admin API once it listens."""
        self.admin: AdminServer | None = None
        if config.admin_listen is not None:
            # Only now is the web stack loaded; built here so that a refused bind (no token
            # off loopback) stops the start.
            from ramster.admin.server import AdminServer

            self.admin = AdminServer(
                self,
                self,
                config.admin_listen,
                config.admin_token(),
                read_token=config.admin_read_token,
            )
        self._own_host: str | None = None
        self.inventory = status.InventoryCache(config.heartbeat)
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # -- identity ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Serving: started and not closing."""
        return self._runner is not None and not self._runner.done() and not self._closed

    @property
    def events(self) -> EventLog:
        """The node's event log."""
        return self._events

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

    # -- lifecycle ---------------------------------------------------------------------------------

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
        self._log_transport()

    def _log_transport(self) -> None:
        config = self.config
        if config.tls_ca and config.tls_client_auth:
            tls = "mutual TLS"
        else:
            tls = "TLS" if config.tls_cert else "no TLS"
        if config.encrypt:
            log.info("rpc sessions: authenticated and encrypted (AES-256-GCM), %s", tls)
        else:
            log.warning(
                "rpc sessions: encryption OFF (--no-encryption): frames are authenticated but "
                "readable on the network, %s; peers that ask for encryption still get it",
                tls,
            )
        if self.server.client_secret is not None:
            log.info("rpc: a client secret is configured: programs may use it (client role)")
        if config.test_hooks:
            log.warning(
                "TEST HOOKS ON (--test-hooks): debug.damage lets any authenticated peer corrupt "
                "held copies. Never run a real node like this."
            )

    def _found(self, address: str) -> None:
        if address not in (self.address, self.advertised_address) and self.peers.add_peer(address):
            log.info("discovered peer %s", address)

    async def _run(self) -> None:
        cfg = self.config
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.peers.run(), name="heartbeats")
            tg.create_task(self.tier.spill_forever(), name="spiller and drops")
            tg.create_task(
                loops.reclaim_forever(self.lent, cfg.heartbeat, cfg.owner_grace, cfg.export_grace),
                name="reclaim",
            )
            tg.create_task(
                loops.elect_forever(self.election, self.peers, self._events, cfg.heartbeat),
                name="election",
            )
            tg.create_task(self.driver.run(), name="coordinator")
            tg.create_task(self.follower.run(), name="orders")
            tg.create_task(self.exports.run(), name="exports")

    async def start_nbd(self) -> list[str]:
        """Listen for NBD (once the command line's exports are ready), then resume, in the
        background, the exports this node served when it stopped that its command line does not
        name: their names (none without NBD). Not part of `start()`: a replicated export waits
        until its server has heard every node that may hold its copies."""
        if self.nbd is None:
            return []
        await self.nbd.start(self.exports.named())
        return self.exports.resume({spec.name for spec in self.nbd.config.exports})

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
        if self.nbd is not None:
            await self.nbd.close()
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
        if self._run_lock is not None:
            os.close(self._run_lock)
            self._run_lock = None
        log.info("node stopped node=%s", self.node_id)

    # -- the cluster -------------------------------------------------------------------------------

    def twin(self, incarnation: str, reason: str) -> None:
        """Another process says hello under this node's id: the newer of the two must go."""
        if incarnation_order(incarnation) < incarnation_order(self.incarnation):
            self.duplicate(f"node id {self.node_id} is in use by an older live process")
        else:
            log.error(
                "a newer process under this node's id %s said hello: %s", self.node_id, reason
            )

    # -- cluster.peers.PeerEvents: what the node does when its peers change ---------------------
    # Peers are built before the frontswap and the exports that react (the frontswap holds its
    # copies through them), so the node, which owns all three, is the one that reacts.

    def duplicate(self, reason: str) -> None:
        """This process is a second one under a live node id: stop, keeping its pages safe."""
        if self.fatal is not None:
            return
        self.fatal = reason
        self._events.add("duplicate-id", self.node_id, reason, logging.ERROR)
        log.error(
            "stopping: %s. This process (incarnation %s) is the newer one; the other keeps "
            "its pages. Give this node its own --node-id (or its own --state-dir).",
            reason,
            self.incarnation,
        )
        if self._runner is not None:
            self._runner.cancel()

    def peer_restarted(self, node: NodeId, old_incarnation: Incarnation, new: Incarnation) -> None:
        """A peer restarted as `new`: its copies of this node's pages and of its exports are
        gone (but those its new incarnation holds)."""
        self.tier.holder_restarted(node, old_incarnation, new)
        self.exports.holder_restarted(node, old_incarnation, new)

    def holder_reclaimed(self, node: NodeId, epoch: int) -> None:
        """A holder reclaimed this node's pages: its copies are gone."""
        self.tier.holder_reclaimed(node, epoch)

    def peer_changed(self, t: Transition) -> None:
        """A peer came alive or died: the event log keeps it."""
        if t.new is State.SUSPECT:
            return  # the failure detector's logs say it; the event log keeps decisions
        kind = "peer-alive" if t.new is State.ALIVE else "peer-dead"
        self._events.add(kind, t.node, t.reason)

    # -- exports ---------------------------------------------------------------------------------

    async def adopt_export(self, name: str, size: int, area: int, force: bool = False) -> int:
        """Take an export over from its server (export.adopt): its new term."""
        return await self.exports.adopt(name, size, area, force)

    def _reports(self) -> dict[str, dict[str, Any]]:
        """The latest heartbeat answer of every member not declared dead, this node's own too.

        A suspect member is still one: its copies are repaired only once it is dead.
        """
        present = self.peers.present()
        reports: dict[str | None, dict[str, Any]] = {
            p.node_id: p.info for p in self.peers.peers() if p.node_id in present
        }
        reports[self.node_id] = self.hello_info()
        return {n: r for n, r in reports.items() if n}

    # -- handlers.Control: what the control methods act through ------------------------------------

    def hello_info(self) -> dict[str, Any]:
        """Identity and capacity, as heartbeats carry them."""
        return status.hello_info(self)

    def stats(self) -> dict[str, Any]:
        """Everything worth knowing about this node, as plain data."""
        return status.stats(self)

    def start_drain(self) -> None:
        """Take no new pages; owners see it in heartbeats and move their pages away."""
        if not self.lent.draining:
            self.lent.draining = True
            log.warning(
                "draining: refusing new pages; %d held pages to move",
                self.lent.statistics().pool.stored_pages,
            )

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
            self._events.add("order-refused", coordinator, f"term {order.term}", logging.WARNING)
            view = self.election.view
            raise ProtocolError(
                f"stale order from {coordinator} term {order.term}: "
                f"this node follows {view.coordinator} term {view.term}"
            )
        self.follower.offer(order)

    async def coordinate_rebalance(self) -> bool:
        """Even out the holders now if this node coordinates."""
        return await self.driver.request_rebalance()

    # -- admin.source.NodeSource and NodeControl: what the admin API reads and does -------------

    def describe(self) -> dict[str, Any]:
        """This node: identity, role, budgets, pools, counters."""
        return status.describe(self)

    def members(self) -> list[Member]:
        """Every member this node knows, itself first."""
        out = [Member(self.node_id, self.advertised_address, "alive", self.hello_info())]
        for peer in self.peers.statistics():
            node = peer["node"]
            if node == self.node_id or peer["alias_of"]:
                continue
            info = next((p.info for p in self.peers.peers() if p.node_id == node), {})
            out.append(Member(node or "", peer["address"], peer["state"], info if node else {}))
        return out

    def coordination(self) -> Coordination:
        """Who coordinates."""
        view = self.election.view
        return Coordination(
            view.coordinator, view.term, self.election.is_coordinator, self.driver.snapshot()
        )

    def areas(self) -> list[dict[str, Any]]:
        """This node's frontswap areas and how many pages each has here and on holders (the
        counts are at most one heartbeat old)."""
        counts = self.inventory.areas(self)
        return [
            {
                "area": area,
                "kind": self.frontswap.kind_of(area),
                "local_pages": counts.get(area, (0, 0))[0],
                "remote_pages": counts.get(area, (0, 0))[1],
            }
            for area in self.frontswap.statistics().areas
        ]

    def gauges(self) -> Gauges:
        """What a metrics scrape reads."""
        return Gauges(
            local_pool=self.frontswap.pool.statistics(),
            lent_pool=self.lent.statistics().pool,
            rpc=self.server.statistics(),
            method_latencies=self.server.method_latencies(),
            remote=self.tier.remote_statistics(),
            under_replicated=int(self.inventory.get(self)["under_replicated"]),
            repairing=self.follower.repairing,
            orders_refused=self.orders_refused,
            copies_refused=self.holder.copies_refused,
            nbd=status.nbd_view(self),
            cleancache=self.frontswap.statistics().cleancache or {},
        )

    async def drain(self, node: str) -> None:
        """Have `node` take no new pages (this one, or a peer over the RPC)."""
        if node == self.node_id:
            self.start_drain()
            return
        if node not in {p.node_id for p in self.peers.peers()}:
            raise UnknownNode(node)
        await self.peers.drain(node)

    def exports_view(self) -> dict[str, Any]:
        """The NBD exports served here, held here, and named by the members' heartbeats."""
        heard = {
            name: {"server": p.node_id, "term": term}
            for p in self.peers.peers()
            if p.node_id in self.peers.alive()
            for name, term in (p.info.get("exports") or {}).items()
        }
        served = self.exports.describe()
        for e in served:
            heard[e["name"]] = {"server": self.node_id, "term": e["term"]}
        return {"served": served, "held": status.held_exports(self), "servers": heard}

    async def move_export(self, name: str, to: str, force: bool = False) -> int:
        """Have node `to` (this one or a peer) take the export over: its new term; `force`
        even if it cannot hear every member (the current server among them)."""
        served = self.exports.served.get(name)
        size = served.spec.size if served is not None else 0
        if to == self.node_id:
            return await self.exports.adopt(name, size, 31, force)
        if to not in {p.node_id for p in self.peers.peers()}:
            raise UnknownNode(to)
        return await self.peers.calls.adopt(to, name, size, 31, force)

    async def delete_export(self, name: str) -> int:
        """Delete an export cluster-wide (fence its server, drop every copy): pages dropped."""
        return await self.exports.delete(name)

    async def rebalance(self) -> str:
        """Ask the coordinator (this node, or over the RPC) to even out the holders now."""
        coordinator = self.election.view.coordinator
        if coordinator == self.node_id:
            await self.driver.request_rebalance()
        else:
            await self.peers.rebalance(coordinator)
        return coordinator
