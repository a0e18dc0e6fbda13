"""Put each known bug back (tests/sim/bugs/*.patch, one at a time, in a scratch worktree) and
count the seeds the cluster simulation needs to find it.

    python tests/sim/hunt_bugs.py [--max-seeds N] [--steps S] [BUG ...]

A bug the simulation cannot find within the CI seed budget means it lacks a fault or a checker.
Prints a table, then one JSON object ({bug: seeds to find it, or null}) as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUGS = Path(__file__).with_name("bugs")


def patches(names: list[str]) -> list[Path]:
    """The bug patches asked for (all by default), in their numbered order."""
    found = sorted(BUGS.glob("*.patch"))
    if names:
        found = [p for p in found if any(p.name.startswith(n) for n in names)]
    return found


def hunt(patch: Path, max_seeds: int, steps: int) -> tuple[int | None, str, float]:
    """(seeds until the first failure or None, its message, seconds) with the bug put back."""
    with tempfile.TemporaryDirectory(prefix="ramster-bug-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), "HEAD"],
            check=True,
        )
        try:
            subprocess.run(["git", "-C", str(tree), "apply", str(patch)], check=True)
            env = {**os.environ, "PYTHONPATH": str(tree)}
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ramster.testing.sim",
                    "--seeds",
                    f"0..{max_seeds - 1}",
                    "--steps",
                    str(steps),
                    "--first-failure",
                    "--quiet",
                ],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            took = time.perf_counter() - started
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    match = re.search(r"first failure after (\d+) seeds", done.stdout)
    failure = re.search(r"^FAIL seed \d+: [^:]*: (.*)$", done.stdout, re.MULTILINE)
    return (int(match.group(1)) if match else None), (failure.group(1) if failure else ""), took


def main() -> int:
    """Hunt every bug asked for; 1 if one was not found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bugs", nargs="*", help="patch name prefixes (default: all)")
    parser.add_argument("--max-seeds", type=int, default=200, help="seeds to try per bug")
    parser.add_argument("--steps", type=int, default=200, help="steps per seed")
    args = parser.parse_args()
    found: dict[str, int | None] = {}
    print(f"{'bug':<40} {'seeds':>6} {'seconds':>8}  first failure")
    for patch in patches(args.bugs):
        seeds, what, took = hunt(patch, args.max_seeds, args.steps)
        found[patch.stem] = seeds
        shown = "not found" if seeds is None else str(seeds)
        print(f"{patch.stem:<40} {shown:>6} {took:>8.1f}  {what[:100]}", flush=True)
    print(json.dumps(found))
    return 0 if all(v is not None for v in found.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
