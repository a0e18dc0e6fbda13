"""`ramster node`: its options, and running one node in the foreground."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ramster.cli import options
from ramster.cli.options import positive_int, size
from ramster.settings import parse_bool

if TYPE_CHECKING:
    from ramster.cli.options import Sub


def add_parser(sub: Sub) -> None:
    """The `node` subcommand and every node setting."""
    p = sub.add_parser(
        "node",
        help="run a node in the foreground",
        description=(
            "Run a ramster node: a frontswap backend that compresses pages into a local pool, "
            "spills cold pages to peers (R copies each) and lends RAM to peers. Every option "
            "can also come from a RAMSTER_<NAME> environment variable (e.g. RAMSTER_LOCAL_BUDGET) "
            "or from a TOML file (--config); flags win over variables, variables over the file. "
            "Sizes take K, M, G suffixes (powers of 1024: 64MiB, 1G); times are seconds."
        ),
    )
    options.config_file(p, "node")
    p.add_argument(
        "--node-id", help="stable node id (default: generated once, kept in --state-dir)"
    )
    p.add_argument(
        "--cluster", help="cluster name; only nodes of the same name talk (default: ramster)"
    )
    p.add_argument(
        "--secret-file",
        type=Path,
        help="file with the cluster secret, mode 600 (default: $RAMSTER_CLUSTER_SECRET)",
    )
    p.add_argument(
        "--client-secret-file",
        type=Path,
        help="file with a second secret, mode 600, that lets programs store and load pages and "
        "read stats but never act as a node (default: $RAMSTER_CLIENT_SECRET; none: programs "
        "use the cluster secret)",
    )
    p.add_argument("--listen", help="RPC address host:port (default: 127.0.0.1:7070; port 0 = any)")
    p.add_argument(
        "--advertise",
        metavar="HOST",
        help="host others reach this node at, as shown in status and the dashboard (default: the "
        "--listen host; for 0.0.0.0, this host's own address)",
    )
    options.local_budget(p, "256MiB", "cold pages spill to peers")
    p.add_argument(
        "--lent-budget", type=size, help="RAM lent to other nodes' pages (default: 256MiB)"
    )
    p.add_argument(
        "--replicas", type=positive_int, help="remote copies per spilled page, R (default: 2)"
    )
    p.add_argument(
        "--high-watermark",
        type=float,
        help="share of the local budget above which cold pages spill (default: 0.85)",
    )
    p.add_argument(
        "--low-watermark",
        type=float,
        help="share of the local budget below which spilling stops (default: 0.70)",
    )
    p.add_argument(
        "--peer",
        dest="peers",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a static peer's RPC address (repeatable)",
    )
    p.add_argument(
        "--state-dir", type=Path, help="where the node id is kept (default: ~/.local/state/ramster)"
    )
    p.add_argument("--page-size", type=size, help="bytes per page (default: 4096)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default: 0.5)")
    p.add_argument(
        "--dead-after", type=float, help="seconds of silence before a peer is gone (default: 2.5)"
    )
    p.add_argument(
        "--mdns-interface",
        metavar="ADDRESS",
        help="find peers with mDNS on the interface with this IPv4 address (or 'all'); "
        "default: no multicast, static --peer seeds only",
    )
    p.add_argument(
        "--max-dials",
        type=positive_int,
        help="addresses found by mDNS dialled at once; each is a hint until its handshake names "
        "a node (default: 4)",
    )
    p.add_argument(
        "--owner-grace",
        type=float,
        help="seconds a silent owner's pages are kept before they are reclaimed (default: 300)",
    )
    p.add_argument(
        "--export-cache",
        type=size,
        help="RAM each replicated NBD export keeps for its hot blocks on the serving node, "
        "compressed (default: 64MiB; 0: every read asks a holder)",
    )
    p.add_argument(
        "--export-grace",
        type=float,
        help="seconds the pages of an export whose server is silent are kept (default: 3600; "
        "0: until `ramster export delete`)",
    )
    options.log_level(p)
    p.add_argument(
        "--test-hooks",
        action="store_const",
        const=True,
        default=None,
        help="serve debug.damage, which corrupts held copies: for tests only (logged as a warning)",
    )
    rpc = p.add_argument_group(
        "RPC security",
        "every session is authenticated with the cluster secret and every frame sealed "
        "(AES-256-GCM); TLS from a PKI can wrap it (see docs/rpc.md)",
    )
    rpc.add_argument(
        "--no-encryption",
        dest="encrypt",
        action="store_const",
        const=False,
        default=None,
        help="frames in the clear, still authenticated and checked: for a trusted network only "
        "(a peer that asks for encryption still gets it)",
    )
    rpc.add_argument("--tls-cert", type=Path, help="this node's TLS certificate chain (PEM)")
    rpc.add_argument("--tls-key", type=Path, help="the key of --tls-cert (PEM)")
    rpc.add_argument(
        "--tls-ca",
        type=Path,
        help="CA bundle (PEM) peers must have certificates from: mutual TLS (needs --tls-cert)",
    )
    rpc.add_argument(
        "--no-tls-client-auth",
        dest="tls_client_auth",
        action="store_const",
        const=False,
        default=None,
        help="with --tls-ca, do not require client certificates (programs then need only the CA; "
        "peers still prove the cluster secret)",
    )
    admin = p.add_argument_group(
        "admin API", "HTTP JSON under /v1, /metrics and the dashboard at / (see README)"
    )
    admin.add_argument(
        "--admin",
        dest="admin_listen",
        metavar="HOST:PORT",
        help="serve the admin API here (default: 127.0.0.1:7171; 'off': none; a non-loopback "
        "address needs a token)",
    )
    admin.add_argument(
        "--admin-token-file",
        type=Path,
        help="file with the bearer token mutating calls need (default: $RAMSTER_ADMIN_TOKEN; "
        "none: mutating calls are refused)",
    )
    admin.add_argument(
        "--admin-read-token",
        type=parse_bool,
        metavar="yes|no",
        help="require the token for reads too, all but /v1/health and the dashboard's files "
        "(default: yes when --admin binds a non-loopback address)",
    )
    nbd = p.add_argument_group(
        "NBD exports",
        "serve this node's frontswap as NBD block devices, so that a Linux host can swap to the "
        "cluster (see docs/nbd-swap.md)",
    )
    nbd.add_argument(
        "--nbd",
        metavar="HOST:PORT",
        help="serve NBD on this address (the NBD port is 10809); default: no NBD server",
    )
    options.nbd_exports(nbd, "nbd_exports")
    nbd.add_argument(
        "--refuse-oversized-exports",
        action="store_const",
        const=True,
        default=None,
        help="refuse to create a replicated export larger than what the cluster can hold for it "
        "(live holders' lent budgets over R, as this node knows them then): it is not served, "
        "an export-refused event says why (default: created, with an export-oversized warning; "
        "an export's own :must-fit asks this of it alone)",
    )
    options.nbd_allow(nbd, "nbd_allow")
    options.no_swap_safety(nbd, "nbd_swap_safety")


def run(args: argparse.Namespace) -> int:
    """Load the settings, set up logging, run the node until a signal."""
    from ramster.node.config import load_config
    from ramster.node.run import run_node
    from ramster.telemetry import logs

    config = load_config(options.given(args), file=args.config)
    logs.setup(config.log_level)
    return run_node(config, options.secret(config.secret_file))
