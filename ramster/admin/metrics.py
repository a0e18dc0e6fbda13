"""`/metrics` in the Prometheus text format: read from the node at scrape time, nothing kept twice.

Pool counters carry zswap's and zram's names (stored_pages, same_filled_pages, pool_total_size,
reject_compress_poor, orig_data_size, compr_data_size, huge_pages), labelled pool="local" for
this node's own pages and pool="lent" for the pages it keeps for others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ramster.admin.source import NodeSource
from ramster.telemetry.latency import Histogram

POOL_GAUGES = {
    "stored_pages": "Pages kept in the pool",
    "remote_pages": "Pages whose only copies are on remote holders",
    "same_filled_pages": "Same-filled pages (kept as an 8-byte pattern)",
    "huge_pages": "Pages kept uncompressed (lz4 would not shrink them)",
    "orig_data_size": "Uncompressed bytes of the pages kept",
    "compr_data_size": "Compressed bytes of the pages kept",
    "pool_total_size": "RAM the pool costs, in bytes (what the budget counts)",
    "pool_limit": "The pool's budget, in bytes",
    "metadata_size": "Bytes of per-page metadata and allocator bookkeeping",
    "ephemeral_pages": "Ephemeral (cleancache) pages kept in the pool",
    "ephemeral_bytes": "Compressed bytes of the ephemeral pages kept (room persistent pages "
    "may take)",
}
POOL_COUNTERS = {
    "reject_pool_limit": "Stores refused because the pool was full",
    "reject_compress_poor": "Stores refused because the page did not compress",
    "succ_stores": "Pages stored",
    "failed_stores": "Stores refused",
    "loads": "Pages loaded",
    "exclusive_loads": "Pages loaded and freed at once",
    "invalidates": "Pages invalidated",
    "checksum_failures": "Copies whose checksum did not match (never returned)",
    "compactions": "Slab compactions",
    "pages_compacted": "Objects moved by compaction",
    "evicts": "Ephemeral pages evicted to make room",
}
CLEANCACHE_COUNTERS = {
    "puts": "Pages put into ephemeral areas",
    "succ_gets": "Ephemeral loads that hit",
    "failed_gets": "Ephemeral loads that missed",
    "evicts": "Ephemeral pages of this node evicted (here, or by the spiller for want of room)",
    "invalidates": "Ephemeral pages invalidated",
}
RPC_COUNTERS = {
    "accepted": "Connections accepted",
    "refused_connections": "Connections refused (too many)",
    "handshakes": "Authenticated handshakes",
    "handshake_failures": "Handshakes that failed (wrong secret, cluster, protocol)",
    "protocol_errors": "Malformed frames or messages (the connection was closed)",
    "integrity_failures": "Frames that failed to open: modified, reordered, replayed or injected "
    "(the connection was closed)",
    "preauth_evicted": "Unauthenticated connections dropped to make room for newer handshakes",
    "forbidden": "Calls refused because the caller's role or identity does not allow them",
    "calls": "Calls answered",
    "busy_replies": "Calls refused with Busy (too many in flight)",
    "error_replies": "Calls answered with an error",
}
REMOTE_COUNTERS = {
    "spilled_pages": "Pages spilled to remote holders",
    "direct_remote_stores": "Pages stored straight on holders (local pool full)",
    "remote_loads": "Pages loaded from remote holders",
    "remote_bad_copies": "Stale or corrupt copies a holder returned (not used)",
    "remote_unavailable": "Pages no holder could return",
    "repaired_pages": "Pages re-replicated after a holder was lost or left",
    "recovery_bytes": "Bytes (stored form) re-replicated after a holder was lost or left",
    "rebalanced_pages": "Copies moved to even out holders",
    "pages_lost": "Pages every holder of which was lost",
    "pages_unreadable": "Pages found with no good copy left while re-replicating",
    "direct_copies": "Pages re-replicated holder to holder (not through this node)",
    "orphans_dropped": "Copies dropped on holders that came back after a repair",
    "under_replicated_stores": "Pages placed with fewer than R copies (degraded mode)",
    "holders_reclaimed": "Times a holder said it reclaimed this owner's pages",
    "stragglers": "Holders left out of a batch for answering too late",
    "drops_sent": "Copies dropped on holders",
    "drop_failures": "Drop calls that failed (retried)",
    "drops_given_up": "Drops given up (a holder's queue was full)",
}


BYTE_SIZES = {"orig_data_size", "compr_data_size", "pool_total_size", "pool_limit", "metadata_size"}


def _pool_name(key: str) -> str:
    """zswap's name, without a doubled "pool", with the unit Prometheus expects."""
    name = f"ramster_pool_{key.removeprefix('pool_')}"
    return f"{name}_bytes" if key in BYTE_SIZES else name


def _histogram(name: str, doc: str, label: str, rows: Mapping[str, Histogram]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, h in sorted(rows.items()):
        buckets = [("+Inf" if b == float("inf") else repr(b), c) for b, c in h.cumulative()]
        family.add_metric([value], buckets, h.sum)
    return family


class NodeCollector(Collector):
    """Every figure of one node, gathered when Prometheus scrapes."""

    def __init__(self, node: NodeSource, loop_lag: Histogram, last_lag: list[float]) -> None:
        self.node = node
        self.loop_lag = loop_lag
        self.last_lag = last_lag

    def collect(self) -> Iterator[Metric]:
        """One scrape."""
        node = self.node
        gauges = node.gauges()
        pools = {
            "local": dataclasses.asdict(gauges.local_pool),
            "lent": dataclasses.asdict(gauges.lent_pool),
        }
        for key, doc in POOL_GAUGES.items():
            g = GaugeMetricFamily(_pool_name(key), doc, labels=["pool"])
            for pool, st in pools.items():
                g.add_metric([pool], st[key])
            yield g
        for key, doc in POOL_COUNTERS.items():
            c = CounterMetricFamily(f"ramster_pool_{key}", doc, labels=["pool"])
            for pool, st in pools.items():
                c.add_metric([pool], st[key])
            yield c
        full = GaugeMetricFamily(
            "ramster_pool_full", "1 while the pool refuses stores", labels=["pool"]
        )
        for pool, st in pools.items():
            full.add_metric([pool], 1 if st["full"] else 0)
        yield full

        for key, doc in CLEANCACHE_COUNTERS.items():
            yield CounterMetricFamily(
                f"ramster_cleancache_{key}", doc, value=gauges.cleancache.get(key, 0)
            )

        rpc = dataclasses.asdict(gauges.rpc)
        for key, doc in RPC_COUNTERS.items():
            yield CounterMetricFamily(f"ramster_rpc_{key}", doc, value=rpc[key])
        yield GaugeMetricFamily(
            "ramster_rpc_connections", "Open authenticated RPC connections", rpc["connections"]
        )
        yield GaugeMetricFamily(
            "ramster_rpc_unauthenticated_connections",
            "Open RPC connections still in their handshake",
            rpc["unauthenticated"],
        )
        yield GaugeMetricFamily(
            "ramster_rpc_in_flight", "RPC calls being handled", rpc["in_flight"]
        )
        yield _histogram(
            "ramster_rpc_handle_seconds",
            "Time to handle an RPC call, by method",
            "method",
            {m: h for m, h in gauges.method_latencies.items() if h.total},
        )

        remote = gauges.remote
        for key, doc in REMOTE_COUNTERS.items():
            name = f"ramster_remote_{key.removeprefix('remote_')}"
            yield CounterMetricFamily(name, doc, value=remote[key])
        fetch = GaugeMetricFamily(
            "ramster_remote_fetch_seconds",
            "Latency of fetching pages from holders (recent samples)",
            labels=["quantile"],
        )
        fetch.add_metric(["0.5"], remote["fetch_p50_us"] / 1e6)
        fetch.add_metric(["0.99"], remote["fetch_p99_us"] / 1e6)
        yield fetch

        states = GaugeMetricFamily(
            "ramster_cluster_members", "Members this node knows, by state", labels=["state"]
        )
        counts = {"alive": 0, "suspect": 0, "dead": 0, "unknown": 0}
        for member in node.members():
            counts[member.state] = counts.get(member.state, 0) + 1
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states
        yield GaugeMetricFamily(
            "ramster_under_replicated_pages",
            "This node's pages with fewer than R live copies",
            gauges.under_replicated,
        )
        yield GaugeMetricFamily(
            "ramster_repairing_pages",
            "Pages the current repair order set out to copy",
            gauges.repairing,
        )
        coord = node.coordination()
        yield GaugeMetricFamily(
            "ramster_coordinator",
            "1 on the node that coordinates",
            1 if coord.is_coordinator else 0,
        )
        yield GaugeMetricFamily("ramster_term", "The coordinator's term", coord.term)
        yield CounterMetricFamily(
            "ramster_orders_refused",
            "Orders refused (older term or another coordinator)",
            value=gauges.orders_refused,
        )
        yield CounterMetricFamily(
            "ramster_copies_refused",
            "Copies another owner's repair asked this holder for that it lacked or had bad",
            value=gauges.copies_refused,
        )
        yield from _nbd_metrics(gauges.nbd)
        yield GaugeMetricFamily(
            "ramster_event_loop_lag_seconds",
            "How late the event loop woke up last time",
            self.last_lag[0],
        )
        yield _histogram(
            "ramster_event_loop_lag_seconds_distribution",
            "How late the event loop wakes up",
            "loop",
            {"main": self.loop_lag},
        )


def _nbd_metrics(nbd: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The NBD server's counters, when this node serves exports."""
    if nbd is None:
        return
    requests = CounterMetricFamily(
        "ramster_nbd_requests", "NBD requests by command", labels=["command"]
    )
    for command, n in sorted(nbd["requests"].items()):
        requests.add_metric([command], n)
    yield requests
    errors = CounterMetricFamily("ramster_nbd_errors", "NBD error replies", labels=["error"])
    for error, n in sorted(nbd["errors"].items()):
        errors.add_metric([error], n)
    yield errors
    yield CounterMetricFamily(
        "ramster_nbd_read_bytes", "Bytes read by NBD clients", value=nbd["bytes_read"]
    )
    yield CounterMetricFamily(
        "ramster_nbd_written_bytes", "Bytes written by NBD clients", value=nbd["bytes_written"]
    )
    yield GaugeMetricFamily(
        "ramster_nbd_connections", "Open NBD connections", nbd["connections_active"]
    )
    yield CounterMetricFamily(
        "ramster_nbd_refused_connections",
        "NBD connections closed at once (allow-list or too many)",
        value=nbd["connections_refused"] + nbd["connections_busy"],
    )


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry."""
    return generate_latest(registry)


def registry_for(node: NodeSource, loop_lag: Histogram, last_lag: list[float]) -> CollectorRegistry:
    """A registry of its own (not the process-global one) with the node's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, loop_lag, last_lag))
    return registry
