"""Put each known bug back (tests/sim/bugs/*.patch, one at a time, in a scratch worktree) and
count the seeds the cluster simulation needs to find it.

    python tests/sim/hunt_bugs.py [--max-seeds N] [--steps S] [--exports] [BUG ...]

The same seeds run first on the code as it is (the baseline): a seed counts as finding a bug
only if it fails with the bug put back and passed (or failed otherwise) without it. A bug the
simulation cannot find within the CI seed budget means it lacks a fault or a checker. Failures
of the open bugs in test_simulation.KNOWN count for no bug put back. Prints a
table, then one JSON object ({bug: seeds to find it, or null}) as its last line.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.sim.test_simulation import KNOWN  # noqa: E402

BUGS = Path(__file__).with_name("bugs")
FAIL = re.compile(r"^FAIL seed (\d+): [^:]*: (.*)$")
DONE = re.compile(r"^seed (\d+): ")


def patches(names: list[str]) -> list[Path]:
    """The bug patches asked for (all by default), in their numbered order."""
    found = sorted(BUGS.glob("*.patch"))
    if names:
        found = [p for p in found if any(p.name.startswith(n) for n in names)]
    return found


@contextmanager
def scratch_tree(patch: Path | None) -> Iterator[Path]:
    """A worktree of HEAD (with the patch applied), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ramster-bug-") as scratch:
        tree = Path(scratch) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "-q", str(tree), "HEAD"], check=True)
        try:
            if patch is not None:
                subprocess.run(["git", "-C", str(tree), "apply", str(patch)], check=True)
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)


def _known(what: str) -> bool:
    """A failure of an open bug the simulation found (test_simulation.KNOWN): any patch shifts
    a run's timing, so it may turn up on another seed; it finds none of the bugs put back."""
    return any(k in what for k in KNOWN)


def run_seeds(
    tree: Path,
    seeds: range,
    steps: int,
    baseline: dict[int, str] | None,
    extra: tuple[str, ...] = (),
) -> tuple[dict[int, str], int | None]:
    """Failures per seed ({seed: message}); with a baseline, stop at the first seed whose
    failure it lacks and return how many seeds that took."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "ramster.testing.sim", "--seeds",
            f"{seeds.start}..{seeds.stop - 1}", "--steps", str(steps), *extra]  # fmt: skip
    failures: dict[int, str] = {}
    with subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fail = FAIL.match(line) or re.match(r"^seed (\d+): another failure: (.*)$", line)
            if fail:
                seed, what = int(fail.group(1)), fail.group(2)
                failures[seed] = what
                if baseline is not None and baseline.get(seed) != what and not _known(what):
                    proc.kill()
                    return failures, seed - seeds.start + 1
    return failures, None


def main() -> int:
    """Hunt every bug asked for; 1 if one was not found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bugs", nargs="*", help="patch name prefixes (default: all)")
    parser.add_argument("--max-seeds", type=int, default=100, help="seeds to try per bug")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200, help="steps per seed")
    parser.add_argument(
        "--exports", action="store_true", help="run the simulation with NBD exports (--exports)"
    )
    args = parser.parse_args()
    extra = ("--exports",) if args.exports else ()
    seeds = range(args.first_seed, args.first_seed + args.max_seeds)
    started = time.perf_counter()
    with scratch_tree(None) as tree:
        baseline, _ = run_seeds(tree, seeds, args.steps, None, extra)
    print(f"baseline: {len(baseline)} of {len(seeds)} seeds fail without any bug put back "
          f"({time.perf_counter() - started:.0f} s): {sorted(baseline)}")  # fmt: skip
    found: dict[str, int | None] = {}
    print(f"{'bug':<40} {'seeds':>6} {'seconds':>8}  first failure it caused")
    for patch in patches(args.bugs):
        started = time.perf_counter()
        with scratch_tree(patch) as tree:
            failures, seeds_needed = run_seeds(tree, seeds, args.steps, baseline, extra)
        found[patch.stem] = seeds_needed
        what = "" if seeds_needed is None else failures[seeds.start + seeds_needed - 1]
        shown = "none" if seeds_needed is None else str(seeds_needed)
        took = time.perf_counter() - started
        print(f"{patch.stem:<40} {shown:>6} {took:>8.1f}  {what[:100]}", flush=True)
    print(json.dumps(found))
    return 0 if all(v is not None for v in found.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
