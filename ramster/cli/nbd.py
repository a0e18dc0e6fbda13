"""`ramster nbd`: NBD exports over a local pool of their own."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ramster.cli import options
from ramster.cli.options import positive_int

if TYPE_CHECKING:
    from ramster.cli.options import Sub


def add_parser(sub: Sub) -> None:
    """The `nbd` subcommand."""
    p = sub.add_parser(
        "nbd",
        help="serve NBD block devices from a local compressed pool (swap for a Linux host)",
        description=(
            "Serve NBD exports whose 4 KiB blocks are frontswap pages, kept compressed in a local "
            "RAM pool. A Linux host swaps to it with `nbd-client -b 4096 HOST PORT /dev/nbd0 -N "
            "NAME`, `mkswap /dev/nbd0`, `swapon --discard=pages /dev/nbd0` (see docs/nbd-swap.md; "
            "use `ramster node --nbd` to let pages spill to the cluster). Every option can also "
            "come from a RAMSTER_NBD_<NAME> variable (e.g. RAMSTER_NBD_EXPORTS) or a TOML file's "
            "[nbd] table (--config). Sizes take K, M, G, T suffixes (powers of 1024: 512MiB, 8G)."
        ),
    )
    options.config_file(p, "nbd")
    options.nbd_exports(p, "exports")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default: 127.0.0.1:10809, loopback only; port 0 = any)",
    )
    options.local_budget(p, "256MiB", "writes get ENOSPC")
    options.nbd_allow(p, "allow", "--allow")
    p.add_argument(
        "--max-connections",
        type=positive_int,
        help="connections open at once; more are closed and counted (default: 64)",
    )
    options.no_swap_safety(p, "swap_safety")
    options.log_level(p)


def run(args: argparse.Namespace) -> int:
    """Load the settings, set up logging, serve until a signal."""
    from ramster.nbd.config import load_standalone
    from ramster.nbd.run import run_standalone
    from ramster.telemetry import logs

    settings = load_standalone(options.given(args), file=args.config)
    logs.setup(settings.log_level)
    return run_standalone(settings)
