"""What a node says about itself: the heartbeat report peers read, the description operators
read (/v1/node, `ramster stats`), and the counters they turn into rates. Plain data only."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ramster._version import __version__
from ramster.protocol import MAX_MAP_ENTRIES

if TYPE_CHECKING:
    from ramster.node.node import Node

STATS_EVENTS = 50
"""Recent cluster events in a stats answer (the event log keeps more)."""


class InventoryCache:
    """The slow parts of a node's reports (those that scan the pool), computed at most once
    per heartbeat: heartbeats, /metrics scrapes and dashboards then cost O(1) in pages."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._at = -1e9
        self._areas_at = -1e9
        self._cached: dict[str, Any] = {}
        self._areas: dict[int, tuple[int, int]] = {}

    def areas(self, node: Node) -> dict[int, tuple[int, int]]:
        """area -> (local pages, remote pages), at most one heartbeat old."""
        now = time.monotonic()
        if now - self._areas_at >= self._every:
            self._areas_at = now
            self._areas = node.frontswap.pool.area_counts()
        return self._areas

    def get(self, node: Node) -> dict[str, Any]:
        """The cached inventory, refreshed when older than one heartbeat."""
        # Heartbeats ask for this several times a second: scan the pool at most once a beat.
        now = time.monotonic()
        if now - self._at >= self._every:
            self._at = now
            self._cached = {
                "inventory": node.tier.inventory(),
                "under_replicated": node.tier.under_replicated(node.peers.gone()),
                "lent_pages": node.lent.statistics().pool.stored_pages,
                "repairing_pages": node.follower.repairing,
                "uptime_s": round(time.time() - node.started_at, 1),
                "counters": counters(node),
            }
        return self._cached


def _identity(node: Node) -> dict[str, Any]:
    view = node.election.view
    return {
        "node": node.node_id,
        "incarnation": node.incarnation,
        "cluster": node.config.cluster,
        "version": __version__,
        "coordinator": view.coordinator,
        "term": view.term,
    }


def hello_info(node: Node) -> dict[str, Any]:
    """Identity and capacity, as heartbeats carry them."""
    config = node.config
    return {
        **_identity(node),
        "address": node.advertised_address,
        "lent_free": node.lent.free_bytes(),
        "lent_budget": config.lent_budget,
        "local_used": node.frontswap.pool.used_bytes,
        "local_budget": config.local_budget,
        # Of which ephemeral (evictable), as the dashboard's bars show them.
        "local_ephemeral": node.frontswap.pool.ephemeral_bytes,
        "lent_used": node.lent.pool.used_bytes,
        "lent_ephemeral": node.lent.pool.ephemeral_bytes,
        "page_size": config.page_size,
        "draining": node.lent.draining,
        "admin": node.admin_address,
        "orders_done": list(node.follower.done),
        "exports": {e["name"]: e["term"] for e in node.exports.describe()[:MAX_MAP_ENTRIES]},
        **node.inventory.get(node),
    }


def counters(node: Node) -> dict[str, int]:
    """Monotonic counters operators turn into rates (dashboard, metrics)."""
    pool = node.frontswap.pool.statistics()
    remote = node.tier.remote_statistics()
    return {
        "stores": pool.succ_stores,
        "loads": pool.loads + int(remote["remote_loads"]),
        "spilled_pages": int(remote["spilled_pages"] + remote["direct_remote_stores"]),
        "remote_loads": int(remote["remote_loads"]),
        "repaired_pages": int(remote["repaired_pages"]),
        "rebalanced_pages": int(remote["rebalanced_pages"]),
    }


def ephemeral_view(node: Node) -> dict[str, Any]:
    """The ephemeral (cleancache) side: its counters, named as cleancache's, and its pages
    here, on holders and held for others."""
    fs = node.frontswap.statistics()
    lent = node.lent.statistics().pool
    remote = node.tier.remote_statistics()
    return {
        **(fs.cleancache or {}),
        "areas": list(fs.ephemeral_areas),
        "pages": fs.pool.ephemeral_pages,
        "bytes": fs.pool.ephemeral_bytes,
        "spilled_pages": int(remote["ephemeral_spilled_pages"]),
        "remote_misses": int(remote["ephemeral_misses"]),
        "lent_pages": lent.ephemeral_pages,
        "lent_bytes": lent.ephemeral_bytes,
        "lent_evicts": lent.evicts,
    }


def nbd_view(node: Node) -> dict[str, Any] | None:
    """The NBD server's counters as plain data (None without NBD exports)."""
    if node.nbd is None:
        return None
    return dataclasses.asdict(node.nbd.statistics())


def _lent(node: Node) -> dict[str, Any]:
    lent = node.lent.statistics()
    return {
        **dataclasses.asdict(lent.pool),
        "owners": lent.owners,
        "by_owner": node.lent.pages_by_owner(),
        "reclaimed_pages": lent.reclaimed_pages,
        "exports": lent.exports,
        "fenced_requests": lent.fenced_requests,
        "stale_requests": lent.stale_requests,
        "newer_held": lent.newer_held,
        "unordered_copies": lent.unordered_copies,
        "reclaim_pending_pages": lent.reclaim_pending_pages,
    }


def _discovery(node: Node) -> dict[str, Any]:
    mdns = node.discovery
    return {
        **node.peers.discovery_statistics(),
        "mdns": None
        if mdns is None
        else {**mdns.counters, "announcers": len(mdns.found), "queued": mdns.queued},
    }


def _orders(node: Node) -> dict[str, Any]:
    return {
        "busy": node.follower.busy,
        "repairing_pages": node.follower.repairing,
        "refused": node.orders_refused,
    }


def describe(node: Node) -> dict[str, Any]:
    """This node for operators: identity, role, budgets and its pools (/v1/node)."""
    config = node.config
    return {
        **_identity(node),
        "role": node.role,
        "uptime_s": round(time.time() - node.started_at, 3),
        "rpc": node.advertised_address,
        "admin": node.admin_address,
        "page_size": config.page_size,
        "replicas": config.replicas,
        "budgets": {"local": config.local_budget, "lent": config.lent_budget},
        "draining": node.lent.draining,
        "pool": dataclasses.asdict(node.frontswap.pool.statistics()),
        "lent": _lent(node),
        "remote": node.tier.remote_statistics(),
        "ephemeral": ephemeral_view(node),
        "counters": counters(node),
        "orders": _orders(node),
        "copies_refused": node.holder.copies_refused,
        "nbd": nbd_view(node),
        "exports": node.exports.describe(),
        "held_exports": held_exports(node),
    }


def held_exports(node: Node) -> list[dict[str, Any]]:
    """The exports whose pages this node holds: their newest term, server and pages here."""
    return [
        {
            "name": owner.removeprefix("export:"),
            "term": claim.term,
            "server": claim.node,
            "size": claim.size,
            "pages_here": pages,
        }
        for owner, (claim, pages) in sorted(node.lent.exports().items())
    ]


def stats(node: Node) -> dict[str, Any]:
    """Everything worth knowing about this node, as plain data (node.stats, `ramster stats`)."""
    fs = node.frontswap.statistics()
    remote_pages = fs.pool.remote_pages
    gone = node.peers.gone()
    return {
        **hello_info(node),
        "uptime_s": round(time.time() - node.started_at, 3),
        # User + system CPU of the whole process, for CPU per page over an interval.
        "cpu_s": time.process_time(),
        "address": node.advertised_address,
        "areas": list(fs.areas),
        "pool": dataclasses.asdict(fs.pool),
        "metadata_bytes_per_page": round(
            fs.pool.metadata_size / max(1, fs.pool.stored_pages + remote_pages), 1
        ),
        "lent": _lent(node),
        "remote": node.tier.remote_statistics(),
        "ephemeral": ephemeral_view(node),
        "gone_peers": sorted(gone),
        "under_replicated_pages": node.tier.under_replicated(gone),
        "orphans_pending": node.tier.orphans_pending(),
        "copies_refused": node.holder.copies_refused,
        "peers": node.peers.statistics(),
        "heartbeats": {
            "bad_answers": node.peers.bad_answers,
            "duplicates": node.peers.duplicates,
            "refused_views": node.election.refused_views,
        },
        "rpc": dataclasses.asdict(node.server.statistics()),
        "discovery": _discovery(node),
        "orders": _orders(node),
        "nbd": nbd_view(node),
        "exports": node.exports.describe(),
        "held_exports": held_exports(node),
        "aggregates": node.driver.snapshot(),
        "events": [e.to_json() for e in node.events.recent(limit=STATS_EVENTS)],
    }
