"""What the admin API answers, as plain data read from a `NodeSource`. No HTTP here.

Every node can answer for the whole cluster: heartbeats bring each member's capacity, usage,
inventory (pages it keeps on each holder) and counters, so `/v1/cluster` is the same picture
on every node, one heartbeat old at most; the coordinator adds the orders it has under way.
"""

from __future__ import annotations

from typing import Any

from ramster._version import __version__
from ramster.admin.source import NodeSource
from ramster.cluster.coordinator import Report

MEMBER_FIELDS = (
    "incarnation",
    "lent_budget",
    "lent_free",
    "lent_pages",
    "local_used",
    "local_budget",
    "local_ephemeral",
    "lent_used",
    "lent_ephemeral",
    "draining",
    "under_replicated",
    "repairing_pages",
    "uptime_s",
    "admin",
    "counters",
)


def health(node: NodeSource) -> dict[str, Any]:
    """Liveness and readiness."""
    return {
        "status": "ok" if node.ready else "starting",
        "live": True,
        "ready": node.ready,
        "node": node.node_id,
        "version": __version__,
    }


def node_view(node: NodeSource) -> dict[str, Any]:
    """This node: identity, role, budgets and its pools."""
    return node.describe()


def cluster_view(node: NodeSource) -> dict[str, Any]:
    """Members with state and capacity, who coordinates, pages per owner and holder, repairs."""
    coord = node.coordination()
    members: list[dict[str, Any]] = [
        {
            "node": m.node,
            "rpc": m.rpc,
            "state": m.state,
            **{k: m.report.get(k) for k in MEMBER_FIELDS},
            "role": "coordinator" if m.node == coord.coordinator else "member",
        }
        for m in node.members()
        if m.node  # peers that have not answered yet have no id to show
    ]
    members.sort(key=lambda m: str(m["node"]))
    report_of = {m.node: m.report for m in node.members()}
    # What the coordinator reads of the members that are not dead, read the same way here.
    reports = {
        m["node"]: Report.parse(report_of.get(m["node"], {}))
        for m in members
        if m["state"] in ("alive", "suspect")
    }
    pages = {o: dict(r.inventory) for o, r in reports.items() if r.inventory}

    def mean_bytes(holder: str) -> int:
        report = reports.get(holder)
        return report.mean_page_bytes if report is not None else 0

    snapshot = coord.snapshot
    return {
        "cluster": node.describe()["cluster"],
        "answered_by": node.node_id,
        "coordinator": coord.coordinator,
        "term": coord.term,
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


def areas_view(node: NodeSource) -> list[dict[str, Any]]:
    """This node's frontswap areas and how many pages each has here and on holders."""
    return node.areas()
