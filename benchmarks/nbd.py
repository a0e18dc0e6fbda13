"""NBD export throughput and memory against nbdkit's memory plugin, in the same run.

    python benchmarks/nbd.py [--quick]

Servers, each started fresh for every measurement round and given the same work:
  ours            `ramster nbd --export swap0:1GiB --local-budget 1GiB` (lz4 pool, uvloop)
  nbdkit zstd     `nbdkit memory 1G allocator=zstd` (Debian's nbdkit)
  nbdkit sparse   `nbdkit memory 1G allocator=sparse`
Work, in order: nbdcopy of the corpus image (256 MiB of the shared corpus generator, 64 MiB
with --quick) into the export (MiB/s); fio 4 KiB randwrite at iodepth 32 over the image's
range, twice its size in total, the same offsets and data for every server (IOPS), with fio's
own data made to resemble swap (buffer_compress_percentage=50: half of every block compresses
away); the server's RSS after those writes; fio 4 KiB randread at iodepth 32 for a fixed time
(IOPS). Rounds rotate the order of the servers so that a noisy spell on a shared
machine does not land on one of them; figures are medians over rounds. Our export's content is
checked once against the image (nbdcopy out, byte compare) before any figure counts.
Then, on a 3-node cluster on loopback (R=2, benchmarks/replicated_export.py), the same fio work
on a replicated and a local export served by one node in the same run, and a restart: a 1 GiB
replicated export (256 MiB with --quick) is filled, its node killed with -9 and started again;
the time until it serves and the rebuild's pages/s are read.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import replicated_export  # benchmarks/ is the script's directory

from ramster.cli.report import human_bytes, table
from ramster.testing import corpus
from ramster.testing.cpu import cpu_seconds

PAGE = 4096
EXPORT = "swap0"
FIO_DATA = "fio random data, buffer_compress_percentage=50"
SERVERS = ("ours", "nbdkit zstd", "nbdkit sparse")


@dataclass(frozen=True)
class Plan:
    """How much each round does."""

    image_mib: int
    rounds: int
    seconds: float


QUICK = Plan(image_mib=64, rounds=1, seconds=4.0)
FULL = Plan(image_mib=256, rounds=3, seconds=10.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(
            f"{tool} not found: apt-get install qemu-utils libnbd-bin fio nbd-client nbdkit"
        )
    return path


def command(server: str, port: int) -> list[str]:
    """How to start one server on 127.0.0.1:port, in the foreground."""
    if server == "ours":
        return [
            sys.executable,
            "-m",
            "ramster",
            "nbd",
            f"--listen=127.0.0.1:{port}",
            f"--export={EXPORT}:1GiB",
            "--local-budget=1GiB",
            "--log-level=warning",
        ]
    allocator = server.split()[1]
    return [
        need("nbdkit"),
        "--foreground",
        "--exit-with-parent",
        "--ipaddr=127.0.0.1",
        f"--port={port}",
        "memory",
        "1G",
        f"allocator={allocator}",
    ]


@contextlib.contextmanager
def running(server: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A fresh server process and the URI of its export; stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        command(server, port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    uri = f"nbd://127.0.0.1:{port}/{EXPORT if server == 'ours' else ''}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{server} did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield proc, uri
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def fio(uri: str, rw: str, size_mib: int, amount: str) -> float:
    """IOPS of one fio job: 4 KiB blocks, iodepth 32, over the first size_mib of the export;
    `amount` is --io_size=... (a fixed amount of work) or --runtime=... (a fixed time)."""
    timing = ["--time_based", amount] if amount.startswith("--runtime") else [amount]
    out = run(
        need("fio"),
        "--name=bench",
        "--ioengine=nbd",
        f"--uri={uri}",
        f"--rw={rw}",
        "--bs=4k",
        "--iodepth=32",
        f"--size={size_mib}M",
        *timing,
        "--buffer_compress_percentage=50",
        "--refill_buffers",
        # The same offsets and the same data for every server (fio's fixed seed).
        "--randrepeat=1",
        "--output-format=json",
    )
    job = json.loads(out[out.index("{") :])["jobs"][0]
    side = "write" if "write" in rw else "read"
    if job["error"]:
        raise SystemExit(f"fio {rw} failed: error {job['error']}")
    return float(job[side]["iops"])


def rss_mib(proc: subprocess.Popen[bytes]) -> float:
    return psutil.Process(proc.pid).memory_info().rss / (1 << 20)


def measure(server: str, image: Path, plan: Plan, verify: bool) -> dict[str, float]:
    """One round for one server."""
    with running(server) as (proc, uri):
        idle = rss_mib(proc)
        t0 = time.perf_counter()
        run(need("nbdcopy"), "--flush", str(image), uri)
        copy_s = time.perf_counter() - t0
        if verify:
            # The image against the export's first image-size bytes, read back over NBD.
            compared = subprocess.run(
                [need("qemu-img"), "compare", "-f", "raw", "-F", "raw", str(image), uri],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if compared.returncode != 0:
                raise SystemExit(f"{server} returned different bytes: {compared.stdout}")
        after_copy = rss_mib(proc)
        # Writes are a fixed amount of work (each page of the image rewritten twice on average),
        # not a fixed time: a slower server would otherwise end with different data, and its
        # RSS would not compare.
        cpu0 = cpu_seconds(proc.pid)
        write_iops = fio(uri, "randwrite", plan.image_mib, f"--io_size={2 * plan.image_mib}M")
        write_cpu = cpu_seconds(proc.pid) - cpu0
        after_write = rss_mib(proc)
        read_iops = fio(uri, "randread", plan.image_mib, f"--runtime={plan.seconds}")
    return {
        "copy_mib_s": plan.image_mib / copy_s,
        "randwrite_iops": write_iops,
        "randread_iops": read_iops,
        "rss_idle_mib": idle,
        "rss_after_copy_mib": after_copy,
        "rss_mib": after_write,
        # fio writes 2 * image_mib of 4 KiB blocks.
        "server_cpu_us_per_randwrite": write_cpu / (2 * plan.image_mib * 256) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller image, one round (~1 min)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    for tool in ("fio", "nbdcopy", "nbdkit", "qemu-img"):
        need(tool)
    with tempfile.TemporaryDirectory(prefix="ramster-nbd-bench-") as tmp:
        image = Path(tmp) / "corpus.img"
        print(f"generating {plan.image_mib} MiB of corpus...", file=sys.stderr)
        with image.open("wb") as fh:
            for page in corpus.generate(plan.image_mib << 8, seed=args.seed):
                fh.write(page)
        results: dict[str, list[dict[str, float]]] = {s: [] for s in SERVERS}
        for r in range(plan.rounds):
            order = SERVERS[r % 3 :] + SERVERS[: r % 3]
            for server in order:
                verify = server == "ours" and r == 0
                print(f"round {r + 1}/{plan.rounds}: {server}...", file=sys.stderr)
                results[server].append(measure(server, image, plan, verify))
        print("replicated exports on a 3-node cluster...", file=sys.stderr)
        rep = replicated_export.measure(
            plan.image_mib,
            256 if plan.image_mib < 256 else 1024,
            plan.seconds,
            fio,
            lambda text: print(text, file=sys.stderr),
        )
    med: dict[str, dict[str, float]] = {
        s: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for s, ms in results.items()
    }
    rows = []
    for server in SERVERS:
        m = med[server]
        rows.append(
            [
                server,
                f"{m['copy_mib_s']:,.0f}",
                f"{m['randwrite_iops']:,.0f}",
                f"{m['randread_iops']:,.0f}",
                human_bytes(m["rss_idle_mib"] * (1 << 20)),
                human_bytes(m["rss_after_copy_mib"] * (1 << 20)),
                human_bytes(m["rss_mib"] * (1 << 20)),
            ]
        )
    print(
        f"image: {plan.image_mib} MiB of the corpus (seed {args.seed}); fio: 4 KiB, iodepth 32, "
        f"randwrite {2 * plan.image_mib} MiB in all, randread {plan.seconds:.0f} s; {FIO_DATA}; "
        f"medians of {plan.rounds} round(s)"
    )
    print(
        table(
            [
                "server",
                "nbdcopy MiB/s",
                "randwrite IOPS",
                "randread IOPS",
                "RSS idle",
                "RSS after copy",
                "RSS after writes",
            ],
            rows,
        )
    )
    print(
        table(
            ["export on a 3-node cluster", "randwrite IOPS", "randread IOPS"],
            [
                [n, f"{rep[k + '_randwrite_iops']:,.0f}", f"{rep[k + '_randread_iops']:,.0f}"]
                for n, k in (("replicated (R=2)", "rep"), ("local", "loc"))
            ],
        )
    )
    print(
        f"restart: {rep['rebuilt_pages']:,.0f} pages rebuilt at {rep['rebuild_pages_per_s']:,.0f} "
        f"pages/s; kill -9 to serving again {rep['restart_to_serving_s']:.2f} s "
        f"(process start to serving {rep['start_to_serving_s']:.2f} s)"
    )
    ours, zstd, sparse = (med[s] for s in SERVERS)
    result: dict[str, Any] = {
        "randwrite_iops": round(ours["randwrite_iops"]),
        "randread_iops": round(ours["randread_iops"]),
        "rss_mib": round(ours["rss_mib"], 1),
        "randwrite_vs_nbdkit_zstd": round(ours["randwrite_iops"] / zstd["randwrite_iops"], 3),
        "randwrite_vs_nbdkit_sparse": round(ours["randwrite_iops"] / sparse["randwrite_iops"], 3),
        "rss_vs_nbdkit_zstd": round(ours["rss_mib"] / zstd["rss_mib"], 3),
        "rss_growth_vs_nbdkit_zstd": round(
            (ours["rss_mib"] - ours["rss_idle_mib"]) / (zstd["rss_mib"] - zstd["rss_idle_mib"]), 3
        ),
        "server_cpu_us_per_randwrite": round(ours["server_cpu_us_per_randwrite"], 1),
        "nbdcopy_write_mib_s": round(ours["copy_mib_s"], 1),
        "randread_vs_nbdkit_sparse": round(ours["randread_iops"] / sparse["randread_iops"], 3),
        "nbdcopy_vs_nbdkit_zstd": round(ours["copy_mib_s"] / zstd["copy_mib_s"], 3),
        "nbdkit_zstd": {k: round(v, 1) for k, v in zstd.items()},
        "nbdkit_sparse": {k: round(v, 1) for k, v in sparse.items()},
        "replicated_randwrite_iops": round(rep["rep_randwrite_iops"]),
        "replicated_randread_iops": round(rep["rep_randread_iops"]),
        "local_cluster_randwrite_iops": round(rep["loc_randwrite_iops"]),
        "replicated_vs_local_randwrite": round(
            rep["rep_randwrite_iops"] / rep["loc_randwrite_iops"], 3
        ),
        "rebuild_pages_per_s": round(rep["rebuild_pages_per_s"]),
        "restart_to_serving_s": round(rep["restart_to_serving_s"], 2),
        "restart_export_mib": round(rep["rebuilt_pages"] / 256),
        "image_mib": plan.image_mib,
        "rounds": plan.rounds,
        "fio_data": FIO_DATA,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
