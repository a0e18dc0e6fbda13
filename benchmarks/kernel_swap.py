"""A real Linux kernel swapping: the same guest workload against every swap target, in one run.

    python benchmarks/kernel_swap.py [--quick]

qemu boots Debian's cloud kernel (ramster.testing.kernel: KVM if a short probe boot works,
else TCG) with G MiB of RAM; its initramfs runs, for the NBD targets,
    nbd-client 10.0.2.2 PORT /dev/nbd0 -N swap0 -b 4096 -swap -persist
    mkswap /dev/nbd0 && swapon -d /dev/nbd0
    workload W PASSES SEED 25
where the workload (ramster/testing/kernel/workload.c) writes every 4 KiB page of W MiB
(a quarter zero pages, the others half repetitive, half random), then makes PASSES passes in a
random order that verify every page and rewrite a quarter of them. Targets, one after another:
  ramster nbd     `ramster nbd --export swap0:SIZE --local-budget 1GiB`
  cluster         3 `ramster node`s on loopback (R=2), node k0 serving the export with a
                  16 MiB local pool: most pages live in the two peers' lent pools
  nbdkit sparse   `nbdkit memory SIZE allocator=sparse` (C, one process, no compression)
  nbdkit zstd     `nbdkit memory SIZE allocator=zstd`
  zram            in-guest zram with lz4, the kernel's own compressed swap: the local ceiling.
                  Its compressed pages live in the guest's RAM, so this guest gets twice G.
Figures per target: the workload's own seconds (its passes added up), MiB/s of each pass,
pswpin/pswpout from /proc/vmstat, the server's RSS when the workload ended (the cluster: its
three processes together; zram: mem_used_total in the guest), and I/O errors (kernel messages
in the guest / error replies the server counted). Every page is verified; a mismatch is shown.
The ratios are the anchor's seconds over ours. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramster.testing.kernel import (
    AssetError,
    Guest,
    Nbdkit,
    Outcome,
    RamsterCluster,
    RamsterNbd,
    Target,
    Workload,
    Zram,
    build,
    cache_dir,
    probe_accel,
    run_target,
)

SEED = 1


@dataclass(frozen=True)
class Plan:
    """How big the guest and its workload are."""

    memory_mib: int
    workload_mib: int
    passes: int
    timeout: float


QUICK = Plan(memory_mib=96, workload_mib=192, passes=1, timeout=420.0)
FULL = Plan(memory_mib=128, workload_mib=256, passes=2, timeout=900.0)
TARGETS = ("ramster nbd", "cluster", "nbdkit sparse", "nbdkit zstd", "zram")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned first column, right-aligned others."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        rest = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        out.append("  ".join([row[0].ljust(widths[0]), *rest]))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def make(name: str, workdir: Path, size_mib: int) -> Target:
    if name == "ramster nbd":
        return RamsterNbd(name, workdir, size=f"{size_mib}MiB", local_budget="1GiB")
    if name == "cluster":
        return RamsterCluster(name, workdir, size=f"{size_mib}MiB", local_budget="16MiB")
    if name.startswith("nbdkit"):
        return Nbdkit(name, workdir, size=f"{size_mib}M", allocator=name.split()[1])
    return Zram(name, workdir, zram_mib=size_mib)


def measure(name: str, plan: Plan, guest: Guest, accel: str, workdir: Path) -> Outcome:
    size = 2 * plan.workload_mib
    memory = plan.memory_mib * (2 if name == "zram" else 1)
    print(f"{name}: booting a {memory} MiB guest ({accel})...", file=sys.stderr, flush=True)
    outcome = run_target(
        make(name, workdir / name.replace(" ", "-"), size),
        guest,
        accel,
        Workload(plan.workload_mib, plan.passes, SEED),
        memory,
        plan.timeout,
        zram_mib=size,
    )
    print(f"{name}: {outcome.guest.summary()}", file=sys.stderr, flush=True)
    return outcome


def mib_per_s(o: Outcome, plan: Plan) -> float:
    """MiB the workload went through (every pass) per second of its own clock."""
    seconds = o.guest.workload_seconds
    if not o.guest.result or seconds <= 0:
        return 0.0
    return plan.workload_mib * (plan.passes + 1) / seconds


def rss_mib(o: Outcome) -> float:
    if o.target == "zram" and len(o.guest.zram_mm) > 2:
        return o.guest.zram_mm[2] / (1 << 20)
    return o.rss_bytes / (1 << 20)


def server_errors(o: Outcome) -> int:
    return sum(int(v) for v in (o.server.get("error_replies") or {}).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller guest and workload")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    try:
        guest = build()
        accel = probe_accel(guest, cache_dir())
    except AssetError as exc:
        raise SystemExit(f"cannot build the guest: {exc}") from exc
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ramster-kernel-bench-"))
    outcomes = {name: measure(name, plan, guest, accel, workdir) for name in TARGETS}
    rows = []
    for name, o in outcomes.items():
        run = o.guest
        state = "ok" if run.finished and run.mismatches == 0 else "FAILED"
        rows.append(
            [
                name,
                f"{run.workload_seconds:.1f}" if run.result else "-",
                " / ".join(f"{p.mib_per_s:.1f}" for p in run.passes) or "-",
                f"{mib_per_s(o, plan):.2f}",
                f"{run.vmstat.get('pswpin', 0):,}",
                f"{run.vmstat.get('pswpout', 0):,}",
                f"{rss_mib(o):.1f} MiB",
                f"{run.io_errors} / {server_errors(o)}",
                f"{run.mismatches} ({state})",
            ]
        )
    passes = " / ".join(["fill", *(f"verify {i}" for i in range(1, plan.passes + 1))])
    print(
        f"guest: Debian {guest.release}, {plan.memory_mib} MiB RAM (zram: "
        f"{2 * plan.memory_mib}), 1 vCPU, qemu accel {accel}; workload {plan.workload_mib} MiB, "
        f"{plan.passes} verify pass(es), seed {SEED}, 25% rewritten per pass"
    )
    print(
        table(
            [
                "target",
                "seconds",
                f"MiB/s ({passes})",
                "MiB/s",
                "pswpin",
                "pswpout",
                "server RSS",
                "I/O errors (guest / server)",
                "mismatches",
            ],
            rows,
        )
    )
    rate = {name: mib_per_s(o, plan) for name, o in outcomes.items()}
    seconds = {name: o.guest.workload_seconds for name, o in outcomes.items()}

    def ratio(anchor: str, ours: str) -> float | None:
        ok = outcomes[anchor].guest.result and outcomes[ours].guest.result and seconds[ours] > 0
        return round(seconds[anchor] / seconds[ours], 3) if ok else None

    result: dict[str, Any] = {
        "ramster_mib_per_s": round(rate["ramster nbd"], 2),
        "cluster_mib_per_s": round(rate["cluster"], 2),
        "nbdkit_sparse_mib_per_s": round(rate["nbdkit sparse"], 2),
        "nbdkit_zstd_mib_per_s": round(rate["nbdkit zstd"], 2),
        "zram_mib_per_s": round(rate["zram"], 2),
        "cluster_vs_nbdkit_sparse": ratio("nbdkit sparse", "cluster"),
        "ramster_vs_nbdkit_zstd": ratio("nbdkit zstd", "ramster nbd"),
        "accel": accel,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "rss_mib": {k: round(rss_mib(o), 1) for k, o in outcomes.items()},
        "io_errors_guest": {k: o.guest.io_errors for k, o in outcomes.items()},
        "error_replies": {k: server_errors(o) for k, o in outcomes.items()},
        "mismatches": {k: o.guest.mismatches for k, o in outcomes.items()},
        "guest_mib": plan.memory_mib,
        "workload_mib": plan.workload_mib,
        "passes": plan.passes,
        "kernel": guest.release,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
