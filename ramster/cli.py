"""The `ramster` command line. Signals and process exit codes are handled here and only here.

Exit codes: 0 success, 1 the operation failed (refused, not found, verification failed),
2 bad usage or configuration, 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ramster._version import __version__

if TYPE_CHECKING:
    from ramster.rpc import Secret

NODE_HELP = "RPC address of the node, host:port (default: $RAMSTER_NODE or 127.0.0.1:7070)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _size(text: str) -> int:
    from ramster.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node", default=os.environ.get("RAMSTER_NODE", "127.0.0.1:7070"), help=NODE_HELP
    )
    p.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help="file holding the cluster secret (default: $RAMSTER_SECRET_FILE, "
        "else the secret itself in $RAMSTER_CLUSTER_SECRET)",
    )


ADMIN_HELP = (
    "admin API of any node, URL or host:port (default: $RAMSTER_ADMIN or http://127.0.0.1:7171)"
)


def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", help=ADMIN_HELP)
    p.add_argument(
        "--token-file",
        type=Path,
        help="file with the admin bearer token (default: $RAMSTER_ADMIN_TOKEN_FILE, "
        "else the token itself in $RAMSTER_ADMIN_TOKEN)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _node_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--config", type=Path, help="TOML file with node settings ([node] table)")
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
    p.add_argument("--listen", help="RPC address host:port (default: 127.0.0.1:7070; port 0 = any)")
    p.add_argument(
        "--advertise",
        metavar="HOST",
        help="host others reach this node at, as shown in status and the dashboard (default: the "
        "--listen host; for 0.0.0.0, this host's own address)",
    )
    p.add_argument(
        "--local-budget", type=_size, help="RAM for this node's own pages (default: 256MiB)"
    )
    p.add_argument(
        "--lent-budget", type=_size, help="RAM lent to other nodes' pages (default: 256MiB)"
    )
    p.add_argument(
        "--replicas", type=_positive_int, help="remote copies per spilled page, R (default: 2)"
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
    p.add_argument("--page-size", type=_size, help="bytes per page (default: 4096)")
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
        "--owner-grace",
        type=float,
        help="seconds a silent owner's pages are kept before they are reclaimed (default: 300)",
    )
    p.add_argument("--log-level", help="debug, info, warning or error (default: info)")
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
    nbd.add_argument(
        "--export",
        dest="nbd_exports",
        action="append",
        default=[],
        metavar="NAME:SIZE[:AREA]",
        help=EXPORT_HELP,
    )
    nbd.add_argument(
        "--nbd-allow",
        dest="nbd_allow",
        action="append",
        default=[],
        metavar="LIST",
        help=ALLOW_HELP,
    )
    nbd.add_argument(
        "--no-swap-safety",
        dest="nbd_swap_safety",
        action="store_const",
        const=False,
        default=None,
        help=NO_SAFETY_HELP,
    )


EXPORT_HELP = (
    "an export (repeatable): a name of letters, digits, '.', '_', '-' and a size, a multiple of "
    "4 KiB with K, M, G, T suffixes (powers of 1024), e.g. swap0:8GiB; AREA picks the frontswap "
    "area (default: 31, 30, ... so that exports stay clear of clients using area 0)"
)
ALLOW_HELP = (
    "client addresses or networks allowed to connect, comma-separated, repeatable "
    "(e.g. 127.0.0.1,10.0.0.0/8); others are closed and counted (default: loopback only)"
)
NO_SAFETY_HELP = (
    "do not mlockall, set oom_score_adj to -1000 or PR_SET_IO_FLUSHER (on by default: a swap "
    "server must not be swapped out or killed)"
)


def _nbd_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nbd",
        help="serve NBD block devices from a local compressed pool (swap for a Linux host)",
        description=(
            "Serve NBD exports whose 4 KiB blocks are frontswap pages, kept compressed in a local "
            "RAM pool. A Linux host swaps to it with `nbd-client -b 4096 HOST PORT /dev/nbd0 -N "
            "NAME`, `mkswap /dev/nbd0`, `swapon --discard=pages /dev/nbd0` (see docs/nbd-swap.md; "
            "use `ramster node --nbd` to let pages spill to the cluster). Sizes take K, M, G, T "
            "suffixes (powers of 1024: 512MiB, 8G)."
        ),
    )
    p.add_argument(
        "--export",
        dest="exports",
        action="append",
        required=True,
        metavar="NAME:SIZE[:AREA]",
        help=EXPORT_HELP,
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:10809",
        metavar="HOST:PORT",
        help="address to serve on (default: 127.0.0.1:10809, loopback only; port 0 = any)",
    )
    p.add_argument(
        "--local-budget",
        type=_size,
        default=256 << 20,
        help="RAM for the compressed pages, e.g. 512MiB (default: 256MiB); beyond it writes get "
        "ENOSPC",
    )
    p.add_argument(
        "--allow",
        "--nbd-allow",
        dest="allow",
        action="append",
        default=[],
        metavar="LIST",
        help=ALLOW_HELP,
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=64,
        help="connections open at once; more are closed and counted (default: 64)",
    )
    p.add_argument("--no-swap-safety", action="store_true", help=NO_SAFETY_HELP)
    p.add_argument(
        "--log-level", default="info", help="debug, info, warning or error (default: info)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ramster",
        description=(
            "ramster: a memory cluster for ordinary Linux machines. Pages stored through its "
            "frontswap backend are compressed (lz4) into a local RAM pool and, when that fills, "
            "spilled to other nodes' RAM."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ramster {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _node_parser(sub)
    _nbd_parser(sub)

    up = sub.add_parser(
        "up",
        help="run a local cluster of node processes on loopback (what `make run` does)",
        description="Start N nodes on 127.0.0.1 with small budgets, bench them, keep them running.",
    )
    up.add_argument("--nodes", type=_positive_int, default=3, help="how many nodes (default: 3)")
    up.add_argument(
        "--base-port", type=_positive_int, default=7101, help="first RPC port (default: 7101)"
    )
    up.add_argument(
        "--admin-port",
        type=_positive_int,
        default=7171,
        help="first admin API port; node N serves its dashboard on it + N - 1 (default: 7171)",
    )
    up.add_argument(
        "--local-budget", default="16MiB", help="each node's local pool (default: 16MiB)"
    )
    up.add_argument("--lent-budget", default="64MiB", help="each node's lent pool (default: 64MiB)")
    up.add_argument(
        "--bench-mib", type=int, default=64, help="MiB to bench through node 1 (0: none)"
    )
    up.add_argument("--state-dir", type=Path, default=Path(".ramster-dev"), help="logs and secret")
    up.add_argument(
        "--no-stay", action="store_true", help="stop after the bench instead of waiting"
    )

    bench = sub.add_parser(
        "bench",
        help="store MiB of a realistic corpus through a node, load it back, verify every byte",
    )
    _client_args(bench)
    bench.add_argument("--mib", type=_positive_int, default=64, help="MiB to store (default: 64)")
    bench.add_argument(
        "--batch", type=_positive_int, default=256, help="pages per call (default: 256)"
    )
    bench.add_argument("--seed", type=int, default=1, help="corpus seed (default: 1)")
    bench.add_argument("--area", type=int, default=0, help="area to use (default: 0)")

    store = sub.add_parser("store", help="store one page (from a file or stdin)")
    _client_args(store)
    store.add_argument("area", type=int)
    store.add_argument("offset", type=int, help="page index within the area")
    store.add_argument("file", nargs="?", type=Path, help="page contents (default: stdin)")

    load = sub.add_parser("load", help="write one page to stdout")
    _client_args(load)
    load.add_argument("area", type=int)
    load.add_argument("offset", type=int)
    load.add_argument(
        "--page-size", type=_size, default=4096, help="bytes per page (default: 4096)"
    )

    inval = sub.add_parser(
        "invalidate", help="forget pages, or a whole area when no offset is given"
    )
    _client_args(inval)
    inval.add_argument("area", type=int)
    inval.add_argument("offsets", type=int, nargs="*")

    status = sub.add_parser(
        "status",
        help="the cluster at a glance: members, coordinator, capacity, repairs (admin API)",
    )
    _admin_args(status)
    nodes = sub.add_parser("nodes", help="one line per member (admin API)")
    _admin_args(nodes)
    drain = sub.add_parser(
        "drain",
        help="move every page a node holds for others elsewhere, then report it may stop",
        description="Through the admin API: the node refuses new pages; the coordinator has "
        "its owners copy theirs to other holders (copy, verify, then drop). Shows progress "
        "until the node holds nothing, then exits 0. Needs the admin token.",
    )
    drain.add_argument("node_id", metavar="NODE", help="the node's id (see `ramster nodes`)")
    _admin_args(drain)
    drain.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up (exit 1) after this many seconds (default: 600)",
    )
    rebalance = sub.add_parser(
        "rebalance", help="ask the coordinator to even out the holders now (admin API, token)"
    )
    _admin_args(rebalance)
    events = sub.add_parser(
        "events", help="recent cluster events: joins, deaths, elections, repairs (admin API)"
    )
    _admin_args(events)
    events.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )
    events.add_argument(
        "--limit", type=_positive_int, default=50, help="recent events shown first (default: 50)"
    )

    stats = sub.add_parser("stats", help="a node's pools, peers and counters")
    _client_args(stats)
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser(
        "demo",
        help="store a realistic page corpus in a local pool and print compression statistics",
        description=(
            "Store MIB mebibytes of the built-in realistic corpus (zero, same-filled, text and "
            "code, heap-like and random pages) through the frontswap contract into a local "
            "compressed pool, load every page back, verify it, and print what it cost."
        ),
    )
    demo.add_argument(
        "--mib", type=_positive_int, default=64, help="corpus size in MiB (default: 64)"
    )
    demo.add_argument(
        "--budget-mib",
        type=_positive_int,
        default=None,
        help="pool budget in MiB (default: as large as the corpus, so nothing is refused)",
    )
    demo.add_argument("--seed", type=int, default=1, help="corpus seed (default: 1)")
    demo.add_argument(
        "--page-size", type=_positive_int, default=4096, help="page size in bytes (default: 4096)"
    )
    return parser


def _secret(path: Path | None) -> Secret:
    from ramster.rpc import load_secret

    env_file = os.environ.get("RAMSTER_SECRET_FILE")
    return load_secret(path or (Path(env_file) if env_file else None))


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "demo":
        from ramster.demo import run_demo

        return run_demo(
            mib=args.mib, budget_mib=args.budget_mib, seed=args.seed, page_size=args.page_size
        )
    if cmd == "node":
        from ramster.node.config import load_config
        from ramster.node.run import run_node
        from ramster.telemetry import logs

        flags = {k: v for k, v in vars(args).items() if k not in {"command", "config"}}
        flags["peers"] = tuple(args.peers)
        flags["nbd_exports"] = tuple(args.nbd_exports)
        flags["nbd_allow"] = tuple(args.nbd_allow)
        config = load_config(flags, file=args.config)
        logs.setup(config.log_level)
        return run_node(config, _secret(config.secret_file))
    if cmd == "nbd":
        from ramster.nbd.config import LOOPBACK, NbdConfig, parse_exports
        from ramster.nbd.run import run_standalone
        from ramster.telemetry import logs

        if args.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError(f"log level must be debug, info, warning or error: {args.log_level}")
        nbd_config = NbdConfig(
            exports=parse_exports(args.exports),
            listen=args.listen,
            allow=tuple(args.allow) or LOOPBACK,
            max_connections=args.max_connections,
            swap_safety=not args.no_swap_safety,
        )
        logs.setup(args.log_level)
        return run_standalone(nbd_config, args.local_budget)
    if cmd == "up":
        from ramster.devcluster import up
        from ramster.telemetry import logs

        logs.setup("error")  # waiting for nodes to come up is not worth a warning per try
        return up(
            args.nodes,
            args.base_port,
            args.state_dir,
            args.local_budget,
            args.lent_budget,
            args.bench_mib,
            stay=not args.no_stay,
            admin_port=args.admin_port,
        )
    from ramster import tools
    from ramster.telemetry import logs

    logs.setup("error")  # the command reports failures itself, in one line
    if cmd in {"status", "nodes", "drain", "rebalance", "events"}:
        from ramster.admin import commands

        target = commands.Target.from_args(args.admin, args.token_file)
        if cmd == "status":
            return commands.status(target, args.json)
        if cmd == "nodes":
            return commands.nodes(target, args.json)
        if cmd == "drain":
            return commands.drain(target, args.node_id, args.timeout, args.json)
        if cmd == "rebalance":
            return commands.rebalance(target, args.json)
        return commands.events(target, args.follow, args.limit, args.json)
    secret = _secret(args.secret_file)
    if cmd == "bench":
        return tools.bench(args.node, secret, args.mib, args.batch, args.seed, args.area)
    if cmd == "store":
        data = args.file.read_bytes() if args.file else sys.stdin.buffer.read()
        return tools.store(args.node, secret, args.area, args.offset, data)
    if cmd == "load":
        return tools.load(args.node, secret, args.area, args.offset, args.page_size)
    if cmd == "invalidate":
        return tools.invalidate(args.node, secret, args.area, args.offsets)
    if cmd == "stats":
        return tools.stats(args.node, secret, args.json)
    raise AssertionError(f"unhandled command {cmd}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ramster` console script."""
    from ramster.errors import PeerLost, PeerTimeout, RamsterError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (PeerLost, PeerTimeout, ConnectionError) as exc:
        print(f"ramster: cannot reach the node: {exc}", file=sys.stderr)
        return 3
    except (ValueError, LookupError, PermissionError, FileNotFoundError, RuntimeError) as exc:
        print(f"ramster: {exc}", file=sys.stderr)
        return 2
    except RamsterError as exc:
        print(f"ramster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
