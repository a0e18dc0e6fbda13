"""python -m ramster.testing.sim --seed N --steps S | --seeds A..B [--first-failure --match TEXT]

Runs seeds of the cluster simulation; a failing seed prints its report (replayable with
--seed). Hash randomisation is pinned (the run re-executes itself with PYTHONHASHSEED=0), so a
seed replays the same run in any process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ramster.testing.sim.run import run_seed


def _seeds(text: str) -> range:
    first, _, last = text.partition("..")
    return range(int(first), int(last or first) + 1)


def main(argv: list[str] | None = None) -> int:
    """Run the seeds asked for; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m ramster.testing.sim")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int)
    group.add_argument("--seeds", type=_seeds, help="A..B, both included")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--first-failure", action="store_true", help="stop at the first failing seed"
    )
    parser.add_argument(
        "--match",
        metavar="TEXT",
        help="count only failures whose message contains TEXT; the run goes on past others "
        "(with --first-failure: how many seeds it takes to find one kind of bug)",
    )
    parser.add_argument(
        "--exports",
        action="store_true",
        help="run replicated NBD exports too: their workload, operator actions and checkers",
    )
    parser.add_argument("--verbose", action="store_true", help="the nodes' logs too")
    parser.add_argument("--trace", action="store_true", help="print every event as it happens")
    parser.add_argument("--quiet", action="store_true", help="only failures and the summary")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "ramster.testing.sim", *sys.argv[1:]])
    # Coroutines of crashed nodes are never resumed; their collection is no error of a run.
    sys.unraisablehook = lambda _: None
    seeds = range(args.seed, args.seed + 1) if args.seed is not None else args.seeds
    failed: list[int] = []
    started = time.perf_counter()
    for count, seed in enumerate(seeds, 1):
        t0 = time.perf_counter()
        outcome = run_seed(
            seed,
            args.steps,
            verbose=args.verbose,
            echo=args.trace,
            only=args.match,
            exports=args.exports,
        )
        took = time.perf_counter() - t0
        if outcome.failure is not None and (args.match or "") in outcome.failure:
            failed.append(seed)
            print(outcome.report(), flush=True)
            if args.first_failure:
                print(f"first failure after {count} seeds (seed {seed})")
                break
        elif outcome.failure is not None:
            print(f"seed {seed}: another failure: {outcome.failure}", flush=True)
        elif not args.quiet:
            print(
                f"seed {seed}: ok trace={outcome.trace_hash} "
                f"virtual={outcome.virtual_seconds:.1f}s real={took:.2f}s",
                flush=True,
            )
    total = time.perf_counter() - started
    print(f"{count} seeds, {len(failed)} failed {failed} in {total:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
