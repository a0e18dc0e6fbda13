"""`python -m ramster.testing.kernel`: build the guest, probe KVM, or run one target by hand."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ramster.testing.kernel.assets import AssetError, build, cache_dir
from ramster.testing.kernel.run import Restart, killer, run_target
from ramster.testing.kernel.targets import Nbdkit, RamsterCluster, RamsterNbd, Target, Zram
from ramster.testing.kernel.vm import Workload, probe_accel

TARGETS = ("ramster", "cluster", "nbdkit-sparse", "nbdkit-zstd", "zram")


def make_target(name: str, workdir: Path, size_mib: int, local_budget: str) -> Target:
    """A target by its command-line name."""
    if name == "ramster":
        return RamsterNbd("ramster nbd", workdir, size=f"{size_mib}MiB")
    if name == "cluster":
        return RamsterCluster("cluster", workdir, size=f"{size_mib}MiB", local_budget=local_budget)
    if name.startswith("nbdkit-"):
        allocator = name.split("-", 1)[1]
        return Nbdkit(name, workdir, size=f"{size_mib}M", allocator=allocator)
    return Zram("zram", workdir, zram_mib=size_mib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ramster.testing.kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="download the kernel and busybox, build the initramfs")
    sub.add_parser("probe", help="which acceleration works here (kvm or tcg)")
    run = sub.add_parser("run", help="boot the guest against one target")
    run.add_argument("target", choices=TARGETS)
    run.add_argument("--mib", type=int, default=192, help="workload size (default 192)")
    run.add_argument("--memory", type=int, default=96, help="guest RAM in MiB (default 96)")
    run.add_argument("--passes", type=int, default=1, help="verify passes (default 1)")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--local-budget", default="16MiB", help="cluster node 0's local budget")
    run.add_argument("--kill-at", help='kill -9 cluster node k1 at this line ("PROGRESS 0 50")')
    run.add_argument(
        "--restart-at", help="kill -9 cluster node k0 at this line and start it again at once"
    )
    run.add_argument("--nbd-option", action="append", default=[], help="e.g. -nonetlink")
    run.add_argument(
        "--client",
        choices=("nbd-client", "nbd-reconnect"),
        default="nbd-client",
        help="what connects the guest's /dev/nbd0 (nbd-reconnect: survives a restarted server)",
    )
    run.add_argument("--timeout", type=float, default=600.0, help="seconds for the boot")
    run.add_argument("--workdir", type=Path, help="logs (default: a new temporary directory)")
    args = parser.parse_args(argv)
    try:
        guest = build()
        if args.command == "build":
            print(f"kernel {guest.kernel}\ninitramfs {guest.initramfs}\ncache {cache_dir()}")
            return 0
        accel = probe_accel(guest, cache_dir())
        print(f"accel: {accel}", flush=True)
        if args.command == "probe":
            return 0
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ramster-kernel-"))
        size = 2 * args.mib + 64
        target = make_target(args.target, workdir, size, args.local_budget)
        memory = args.memory * (2 if args.target == "zram" else 1)
        outcome = run_target(
            target,
            guest,
            accel,
            Workload(args.mib, args.passes, args.seed),
            memory,
            args.timeout,
            on_line=_on_line(args.kill_at, args.restart_at),
            nbd_options=tuple(args.nbd_option),
            zram_mib=size,
            client=args.client,
        )
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(outcome.describe())
    print(f"logs: {workdir}")
    ok = outcome.guest.finished and outcome.guest.mismatches == 0
    return 0 if ok else 1


def _echo(line: str, target: Target) -> None:
    print(line, flush=True)


def _on_line(kill_at: str | None, restart_at: str | None) -> Callable[[str, Target], str | None]:
    if kill_at:
        return killer(1, kill_at)
    if restart_at:
        return Restart(restart_at)
    return _echo


if __name__ == "__main__":
    sys.exit(main())
