"""The `ramster` command line. Signals and process exit codes are handled here and only here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ramster import __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ramster` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            from ramster.demo import run_demo

            return run_demo(
                mib=args.mib, budget_mib=args.budget_mib, seed=args.seed, page_size=args.page_size
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"ramster: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
