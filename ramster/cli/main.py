"""The `ramster` command line. Signals and process exit codes are handled here and only here.

Exit codes: 0 success, 1 the operation failed (refused, not found, verification failed),
2 bad usage or configuration, 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ramster._version import __version__
from ramster.cli import nbd, node, options
from ramster.cli.options import positive_int, size

if TYPE_CHECKING:
    from ramster.cli.options import Sub

ADMIN_COMMANDS = {"status", "nodes", "drain", "rebalance", "events", "export"}
PAGE_COMMANDS = {"bench", "store", "load", "invalidate", "stats"}


def _up_parser(sub: Sub) -> None:
    up = sub.add_parser(
        "up",
        help="run a local cluster of node processes on loopback (what `make run` does)",
        description="Start N nodes on 127.0.0.1 with small budgets, bench them, keep them running.",
    )
    up.add_argument("--nodes", type=positive_int, default=3, help="how many nodes (default: 3)")
    up.add_argument(
        "--base-port", type=positive_int, default=7101, help="first RPC port (default: 7101)"
    )
    up.add_argument(
        "--admin-port",
        type=positive_int,
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


def _page_parsers(sub: Sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="store MiB of a realistic corpus through a node, load it back, verify every byte",
    )
    options.client(bench)
    bench.add_argument(
        "--mib",
        type=positive_int,
        default=None,
        help="MiB to store (default: 64; with --ephemeral, four times the cluster's free RAM)",
    )
    bench.add_argument(
        "--ephemeral",
        action="store_true",
        help="bench an ephemeral (cache) area: fill it past the cluster's free RAM, read it "
        "back, show hits, misses and evictions",
    )
    bench.add_argument(
        "--batch", type=positive_int, default=256, help="pages per call (default: 256)"
    )
    bench.add_argument("--seed", type=int, default=1, help="corpus seed (default: 1)")
    bench.add_argument(
        "--area", type=int, default=None, help="area to use (default: 0; with --ephemeral: 7)"
    )

    store = sub.add_parser("store", help="store one page (from a file or stdin)")
    options.client(store)
    store.add_argument("area", type=int)
    store.add_argument("offset", type=int, help="page index within the area")
    store.add_argument("file", nargs="?", type=Path, help="page contents (default: stdin)")

    load = sub.add_parser("load", help="write one page to stdout")
    options.client(load)
    load.add_argument("area", type=int)
    load.add_argument("offset", type=int)
    load.add_argument("--page-size", type=size, default=4096, help="bytes per page (default: 4096)")

    inval = sub.add_parser(
        "invalidate", help="forget pages, or a whole area when no offset is given"
    )
    options.client(inval)
    inval.add_argument("area", type=int)
    inval.add_argument("offsets", type=int, nargs="*")

    stats = sub.add_parser("stats", help="a node's pools, peers and counters")
    options.client(stats)
    options.json_output(stats)


def _admin_parsers(sub: Sub) -> None:
    status = sub.add_parser(
        "status",
        help="the cluster at a glance: members, coordinator, capacity, repairs (admin API)",
    )
    options.admin_client(status)
    nodes = sub.add_parser("nodes", help="one line per member (admin API)")
    options.admin_client(nodes)
    drain = sub.add_parser(
        "drain",
        help="move every page a node holds for others elsewhere, then report it may stop",
        description="Through the admin API: the node refuses new pages; the coordinator has "
        "its owners copy theirs to other holders (copy, verify, then drop). Shows progress "
        "until the node holds nothing, then exits 0. Needs the admin token.",
    )
    drain.add_argument("node_id", metavar="NODE", help="the node's id (see `ramster nodes`)")
    options.admin_client(drain)
    drain.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up (exit 1) after this many seconds (default: 600)",
    )
    rebalance = sub.add_parser(
        "rebalance", help="ask the coordinator to even out the holders now (admin API, token)"
    )
    options.admin_client(rebalance)
    events = sub.add_parser(
        "events", help="recent cluster events: joins, deaths, elections, repairs (admin API)"
    )
    options.admin_client(events)
    events.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )
    events.add_argument(
        "--limit", type=positive_int, default=50, help="recent events shown first (default: 50)"
    )


def _demo_parser(sub: Sub) -> None:
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
        "--mib", type=positive_int, default=64, help="corpus size in MiB (default: 64)"
    )
    demo.add_argument(
        "--budget-mib",
        type=positive_int,
        default=None,
        help="pool budget in MiB (default: as large as the corpus, so nothing is refused)",
    )
    demo.add_argument("--seed", type=int, default=1, help="corpus seed (default: 1)")
    demo.add_argument(
        "--page-size", type=positive_int, default=4096, help="page size in bytes (default: 4096)"
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
    node.add_parser(sub)
    nbd.add_parser(sub)
    _export_parsers(sub)
    _up_parser(sub)
    _page_parsers(sub)
    _admin_parsers(sub)
    _demo_parser(sub)
    return parser


def _export_parsers(sub: options.Sub) -> None:
    export = sub.add_parser(
        "export",
        help="NBD exports across the cluster: list, move to another node, delete (admin API)",
        description="Replicated exports outlive the node that serves them: `move` has another "
        "node (one started with --nbd) take the next term, rebuild the export from its holders "
        "and serve it; the old server is fenced. `delete` drops every copy for good.",
    )
    verbs = export.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="each export: server, term, durability, pages")
    options.admin_client(listing)
    move = verbs.add_parser("move", help="serve an export from another node (token)")
    move.add_argument("name", metavar="NAME", help="the export's name")
    move.add_argument("--to", required=True, metavar="NODE", help="the node to serve it")
    move.add_argument(
        "--force",
        action="store_true",
        help="take it over even if the new server cannot hear every member (the current "
        "server among them): what only they hold is lost, and counted",
    )
    options.admin_client(move)
    delete = verbs.add_parser("delete", help="forget an export and all its copies (token)")
    delete.add_argument("name", metavar="NAME", help="the export's name")
    options.admin_client(delete)


def _admin(args: argparse.Namespace) -> int:
    from ramster.admin.client import Target
    from ramster.cli import admin

    target = Target.from_args(args.admin, args.token_file)
    cmd = args.command
    if cmd == "status":
        return admin.status(target, args.json)
    if cmd == "nodes":
        return admin.nodes(target, args.json)
    if cmd == "drain":
        return admin.drain(target, args.node_id, args.timeout, args.json)
    if cmd == "rebalance":
        return admin.rebalance(target, args.json)
    if cmd == "export":
        if args.verb == "move":
            return admin.export_move(target, args.name, args.to, args.json, args.force)
        if args.verb == "delete":
            return admin.export_delete(target, args.name, args.json)
        return admin.export_list(target, args.json)
    return admin.events(target, args.follow, args.limit, args.json)


def _pages(args: argparse.Namespace) -> int:
    from ramster.cli import pages

    secret = options.access(args)
    cmd = args.command
    if cmd == "bench" and args.ephemeral:
        from ramster.cli import cachebench

        area = 7 if args.area is None else args.area
        return cachebench.bench(args.node, secret, args.mib, args.batch, args.seed, area)
    if cmd == "bench":
        area = 0 if args.area is None else args.area
        return pages.bench(args.node, secret, args.mib or 64, args.batch, args.seed, area)
    if cmd == "store":
        data = args.file.read_bytes() if args.file else sys.stdin.buffer.read()
        return pages.store(args.node, secret, args.area, args.offset, data)
    if cmd == "load":
        return pages.load(args.node, secret, args.area, args.offset, args.page_size)
    if cmd == "invalidate":
        return pages.invalidate(args.node, secret, args.area, args.offsets)
    return pages.stats(args.node, secret, args.json)


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "node":
        return node.run(args)
    if cmd == "nbd":
        return nbd.run(args)
    if cmd == "demo":
        from ramster.cli.demo import run_demo

        return run_demo(
            mib=args.mib, budget_mib=args.budget_mib, seed=args.seed, page_size=args.page_size
        )
    from ramster.telemetry import logs

    if cmd == "up":
        from ramster.cli.up import up

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
    logs.setup("error")  # the command reports failures itself, in one line
    if cmd in ADMIN_COMMANDS:
        return _admin(args)
    if cmd in PAGE_COMMANDS:
        return _pages(args)
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
