"""The replicated-export part of benchmarks/nbd.py: a 3-node cluster on loopback, R=2.

    python benchmarks/replicated_export.py [--quick]   (alone; nbd.py runs it with the rest)

Node n0 serves two exports of the same size in the same run: `rep` (replicated: a write is
answered once two other nodes hold it) and `loc` (local: once it is in n0's pool, which is large
enough to keep everything). fio does the same 4 KiB randwrite and randread work on both. Then a
larger replicated export is filled, n0 is killed with -9 and started again, and the time until
the export serves again and the rebuild's rate (from n0's log line) are read.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ramster.testing.cluster import free_port, make_cluster

REBUILT = re.compile(
    r"export big: serving \(term \d+\): (\d+) pages rebuilt in ([\d.]+) s \((\d+) pages/s\)"
)
"""n0's log line once the export serves: pages, seconds since the start (peers awaited, term
claimed), and the rebuild's own rate (inventories, merge, index)."""


def _serves(url: str) -> bool:
    out = subprocess.run(
        ["qemu-io", "-f", "raw", "-c", "read 0 4k", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "read 4096/4096" in out.stdout


def measure(
    image_mib: int,
    restart_mib: int,
    seconds: float,
    fio: Callable[[str, str, int, str], float],
    progress: Callable[[str], None],
) -> dict[str, float]:
    """Figures of the replicated exports (see the module)."""
    with tempfile.TemporaryDirectory(prefix="ramster-nbd-rep-") as tmp:
        port = free_port()
        lent = f"{max(512, restart_mib * 2)}MiB"
        cluster = make_cluster(Path(tmp), 3, local_budget="1GiB", lent_budget=lent)
        cluster.nodes[0].args += [
            f"--nbd=127.0.0.1:{port}",
            f"--export=rep:{image_mib}MiB:replicated",
            f"--export=loc:{image_mib}MiB:local",
            f"--export=big:{restart_mib}MiB:replicated",
            "--no-swap-safety",
        ]
        try:
            for i in range(3):
                cluster.start(i)
            asyncio.run(cluster.wait_ready())
            base = f"nbd://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while not _serves(f"{base}/rep") and time.monotonic() < deadline:
                time.sleep(0.1)
            out: dict[str, float] = {}
            for name in ("loc", "rep"):
                progress(f"replicated cluster: randwrite and randread on {name}...")
                url = f"{base}/{name}"
                out[f"{name}_randwrite_iops"] = fio(
                    url, "randwrite", image_mib, f"--io_size={2 * image_mib}M"
                )
                out[f"{name}_randread_iops"] = fio(
                    url, "randread", image_mib, f"--runtime={seconds}"
                )
            progress(f"replicated cluster: filling a {restart_mib} MiB export, then kill -9...")
            fill = subprocess.run(
                [
                    "fio",
                    "--name=fill",
                    "--ioengine=nbd",
                    f"--uri={base}/big",
                    "--rw=write",
                    "--bs=1M",
                    "--iodepth=8",
                    f"--size={restart_mib}M",
                    "--buffer_compress_percentage=50",
                    "--refill_buffers",
                    "--output-format=json",
                ],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
            if fill.returncode != 0:
                raise SystemExit(f"fio fill failed: {fill.stdout}{fill.stderr}")
            cluster.kill(0)
            started = time.monotonic()
            cluster.start(0)
            while not _serves(f"{base}/big"):
                if time.monotonic() - started > 300:
                    raise SystemExit("the export did not serve again within 300 s")
                time.sleep(0.02)
            out["restart_to_serving_s"] = time.monotonic() - started
            found = REBUILT.findall(cluster.nodes[0].log.read_text())
            if len(found) < 2:
                raise SystemExit("no rebuild line in n0's log")
            pages, took, rate = found[-1]
            out["rebuilt_pages"] = float(pages)
            out["start_to_serving_s"] = float(took)
            out["rebuild_pages_per_s"] = float(rate)
            if int(pages) < restart_mib * 256:
                raise SystemExit(f"rebuilt {pages} pages of {restart_mib * 256}")
            return out
        finally:
            cluster.stop_all()


def main() -> None:
    """Run the replicated-export part alone (benchmarks/nbd.py runs it with the rest)."""
    import argparse
    import json
    import sys

    import nbd  # benchmarks/ is the script's directory

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="64 MiB exports, a 256 MiB restart (~1 min)"
    )
    args = parser.parse_args()
    plan = nbd.QUICK if args.quick else nbd.FULL
    restart_mib = 256 if args.quick else 1024
    out = measure(
        plan.image_mib, restart_mib, plan.seconds, nbd.fio, lambda t: print(t, file=sys.stderr)
    )
    print(
        f"replicated randwrite {out['rep_randwrite_iops']:,.0f} IOPS vs local "
        f"{out['loc_randwrite_iops']:,.0f}; rebuild {out['rebuild_pages_per_s']:,.0f} pages/s; "
        f"kill -9 to serving {out['restart_to_serving_s']:.2f} s ({restart_mib} MiB)"
    )
    print(
        json.dumps(
            {
                "replicated_randwrite_iops": round(out["rep_randwrite_iops"]),
                "replicated_randread_iops": round(out["rep_randread_iops"]),
                "replicated_vs_local_randwrite": round(
                    out["rep_randwrite_iops"] / out["loc_randwrite_iops"], 3
                ),
                "rebuild_pages_per_s": round(out["rebuild_pages_per_s"]),
                "restart_to_serving_s": round(out["restart_to_serving_s"], 2),
                "restart_export_mib": restart_mib,
            }
        )
    )


if __name__ == "__main__":
    main()
