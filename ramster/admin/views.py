"""What the admin API answers, as plain data built from a node. No HTTP here: testable alone.

Every node can answer for the whole cluster: heartbeats bring each member's capacity, usage,
inventory (pages it keeps on each holder) and counters, so `/v1/cluster` is the same picture
on every node, one heartbeat old at most; the coordinator adds the orders it has under way.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from ramster import __version__
from ramster.cluster.coordinator import Report

if TYPE_CHECKING:
    from ramster.node import Node

MEMBER_FIELDS = (
    "incarnation",
    "lent_budget",
    "lent_free",
    "lent_pages",
    "local_used",
    "local_budget",
    "draining",
    "under_replicated",
    "repairing_pages",
    "uptime_s",
    "admin",
    "counters",
)


def health(node: Node) -> dict[str, Any]:
    """Liveness and readiness."""
    return {
        "status": "ok" if node.ready else "starting",
        "live": True,
        "ready": node.ready,
        "node": node.node_id,
        "version": __version__,
    }


def node_view(node: Node) -> dict[str, Any]:
    """This node: identity, role, budgets and its pools."""
    fs = node.frontswap.statistics()
    lent = node.lent.statistics()
    view = node.election.view
    return {
        "node": node.node_id,
        "incarnation": node.incarnation,
        "cluster": node.config.cluster,
        "version": __version__,
        "role": node.role,
        "coordinator": view.coordinator,
        "term": view.term,
        "uptime_s": round(time.time() - node.started_at, 3),
        "rpc": node.advertised_address,
        "admin": node.admin_address,
        "page_size": node.config.page_size,
        "replicas": node.config.replicas,
        "budgets": {"local": node.config.local_budget, "lent": node.config.lent_budget},
        "draining": node.lent.draining,
        "pool": dataclasses.asdict(fs.pool),
        "lent": {
            **dataclasses.asdict(lent.pool),
            "owners": lent.owners,
            "reclaimed_pages": lent.reclaimed_pages,
        },
        "remote": node.frontswap.remote_statistics(),
        "counters": node.counters(),
        "orders": {
            "busy": node.follower.busy,
            "repairing_pages": node.follower.repairing,
            "refused": node.orders_refused,
        },
        "copies_refused": node.copies_refused,
        "nbd": node.nbd_view(),
    }


def cluster_view(node: Node) -> dict[str, Any]:
    """Members with state and capacity, who coordinates, pages per owner and holder, repairs."""
    info_of = {p.node_id: p.info for p in node.peers.peers() if p.node_id}
    members: list[dict[str, Any]] = [
        {
            "node": peer["node"],
            "rpc": peer["address"],
            "state": peer["state"],
            **{k: info_of.get(peer["node"], {}).get(k) for k in MEMBER_FIELDS},
        }
        for peer in node.peers.statistics()
        if peer["node"] and peer["node"] != node.node_id
    ]
    info_of[node.node_id] = me = node.hello_info()
    members.append(
        {"node": node.node_id, "rpc": node.advertised_address, "state": "alive"}
        | {k: me.get(k) for k in MEMBER_FIELDS}
    )
    view = node.election.view
    for m in members:
        m["role"] = "coordinator" if m["node"] == view.coordinator else "member"
    members.sort(key=lambda m: str(m["node"]))
    # What the coordinator reads of the members that are not dead, read the same way here.
    reports = {
        m["node"]: Report.parse(info_of.get(m["node"], {}))
        for m in members
        if m["state"] in ("alive", "suspect")
    }
    pages = {o: dict(r.inventory) for o, r in reports.items() if r.inventory}

    def mean_bytes(holder: str) -> int:
        report = reports.get(holder)
        return report.mean_page_bytes if report is not None else 0

    snapshot = node.driver.snapshot()
    return {
        "cluster": node.config.cluster,
        "answered_by": node.node_id,
        "coordinator": view.coordinator,
        "term": view.term,
        "members": members,
        "pages": pages,
        "bytes": {o: {h: c * mean_bytes(h) for h, c in inv.items()} for o, inv in pages.items()},
        "under_replicated_pages": sum(r.under_replicated for r in reports.values()),
        "rebalance": {
            "repairing_pages": sum(int(m["repairing_pages"] or 0) for m in members),
            "orders_pending": snapshot["orders_pending"] if snapshot else None,
            "orders_sent": snapshot["orders_sent"] if snapshot else None,
            "pages_moved": snapshot["pages_moved"] if snapshot else None,
        },
    }


def areas_view(node: Node) -> list[dict[str, Any]]:
    """This node's frontswap areas and how many pages each has here and on holders."""
    counts = node.frontswap.pool.area_counts()
    return [
        {
            "area": area,
            "local_pages": counts.get(area, (0, 0))[0],
            "remote_pages": counts.get(area, (0, 0))[1],
        }
        for area in node.frontswap.statistics().areas
    ]
