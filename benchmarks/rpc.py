"""Peer RPC throughput and latency, with redis anchors measured in the same run.

    python benchmarks/rpc.py [--quick]

Our side: an RpcServer with an in-memory dict holder (no page pool: this measures the RPC) in a
child process, the client here, both on uvloop, over 127.0.0.1. Pages are 4096 random bytes
(an incompressible page, the same size as redis-benchmark's -d 4096 values).
  (a) one page per call, sequential: pages/s, p50, p99 for put and get;
  (b) 64-page batches with several calls in flight: pages/s for put and get;
both over the default transport (every frame encrypted, AES-256-GCM) and, in the same rounds,
with encryption off (frames in the clear, each still authenticated by its GCM tag).
Context: the floor, one page per round trip over a bare asyncio Protocol on the same loop and
placement (no framing, no checks): no RPC on this machine can beat its latency.
Anchors: redis-server (persistence off, free loopback port) measured with
`redis-benchmark -d 4096 -P 64` SET/GET (the C ceiling here) and with redis-py, one command
per round trip and pipelined by 64 (what a Python user would reach for).
The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import cast

from ramster.cli.report import table
from ramster.rpc import Keys, PageBatch, RpcClient, RpcConfig, RpcServer, load_secret, run
from ramster.rpc.auth import SECRET_ENV
from ramster.rpc.loop import loop_name
from ramster.rpc.testing import DictPageStore
from ramster.testing.cpu import live_cpu_seconds as cpu_seconds

PAGE = 4096
BATCH = 64
IN_FLIGHT = 8
WORKING_SET = 4096
"""Distinct pages written and read (16 MiB): more than caches flatter, small enough to fit."""
CLUSTER = "bench"
INSTALL_REDIS = "apt-get install redis-server redis-tools (Debian's packages)"


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs in one round; every figure is the median of the rounds.

    Rounds interleave ours and the anchors, so that a noisy spell on a shared machine hits
    both sides rather than one."""

    rounds: int
    seconds: float
    single_calls: int
    redis_requests: int
    redis_py_ops: int


QUICK = Plan(rounds=3, seconds=2.5, single_calls=4_000, redis_requests=150_000, redis_py_ops=4_000)
FULL = Plan(rounds=5, seconds=4.0, single_calls=10_000, redis_requests=400_000, redis_py_ops=8_000)


# -- placement ----------------------------------------------------------------------------

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SERVER_CPU = CPUS[0] if len(CPUS) >= 2 else None
CLIENT_CPU = CPUS[1] if len(CPUS) >= 2 else None
"""Servers (ours and redis-server) on one CPU, clients (ours, redis-py, redis-benchmark) on
another, for every measurement alike. Left to the scheduler, round-trip latency is bimodal
(two processes sharing a core answer in half the time) and runs do not compare."""


@contextlib.contextmanager
def spawning_on(cpu: int | None) -> Iterator[None]:
    """Processes started inside inherit this CPU; the caller's own placement is restored."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def placement() -> str:
    """How processes sit on CPUs in this run."""
    if SERVER_CPU is None:
        return "one CPU shared by all"
    return f"servers on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU}"


# -- the server child ---------------------------------------------------------------------


class BareServer(asyncio.Protocol):
    """The floor: answers every 16-byte request with one page; no framing, no checks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.page = os.urandom(PAGE)
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.pending += len(data)
        while self.pending >= 16:
            self.pending -= 16
            self.transport.write(self.page)


class BareClient(asyncio.Protocol):
    """Client side of the floor measurement."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= PAGE and self.waiter is not None and not self.waiter.done():
            self.received -= PAGE
            self.waiter.set_result(None)


async def serve() -> None:
    """Child mode: serve pages from a dict (and the bare floor) on free ports, print them, run
    until stdin closes."""
    # The server leaves the choice to each client: a session is encrypted if either side asks.
    config = RpcConfig(cluster=CLUSTER, max_in_flight=1024, idle_timeout=None, encrypt=False)
    server = RpcServer(load_secret(), config)
    server.register_pages(DictPageStore())
    await server.start()
    loop = asyncio.get_running_loop()
    bare = await loop.create_server(BareServer, "127.0.0.1", 0)
    print(server.port, bare.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    bare.close()
    await server.close()


def start_child(secret: str) -> tuple[subprocess.Popen[str], int, int]:
    """The server child process, its RPC port and its bare floor port."""
    env = dict(os.environ, **{SECRET_ENV: secret})
    with spawning_on(SERVER_CPU):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the benchmark server did not start")
    port, bare_port = line.split()
    return proc, int(port), int(bare_port)


def stop_child(proc: subprocess.Popen[str]) -> None:
    """Ask the child to exit (stdin EOF), kill it if it does not."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


# -- our measurements ---------------------------------------------------------------------


def percentile(sorted_ns: list[int], q: float) -> float:
    """q-quantile of sorted nanosecond samples, in microseconds."""
    index = min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))
    return sorted_ns[index] / 1000


async def single_round_trips(
    n: int, call: Callable[[int], Awaitable[object]]
) -> tuple[float, float, float]:
    """(pages/s, p50 us, p99 us) of n sequential one-page calls."""
    for i in range(min(n // 10, 500)):  # warm up
        await call(i)
    samples: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    for i in range(n):
        t0 = clock()
        await call(i)
        samples.append(clock() - t0)
    elapsed = (clock() - start) / 1e9
    samples.sort()
    return n / elapsed, percentile(samples, 0.50), percentile(samples, 0.99)


async def batched(
    seconds: float, workers: int, call: Callable[[int], Awaitable[int]]
) -> tuple[float, int]:
    """(pages/s, pages) of `workers` loops each calling call(i) (returns pages moved) until
    time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    moved = [0] * workers

    async def worker(w: int) -> None:
        i = w
        while loop.time() < deadline:
            moved[w] += await call(i)
            i += workers

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for w in range(workers):
            tg.create_task(worker(w))
    return sum(moved) / (time.perf_counter() - start), sum(moved)


async def measure_floor(port: int, n: int) -> dict[str, float]:
    """One page per round trip with no RPC at all (asyncio Protocol, same loop): the floor."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(BareClient, "127.0.0.1", port)
    request = b"g" * 16

    async def one(i: int) -> None:
        client.waiter = loop.create_future()
        transport.write(request)
        await client.waiter

    try:
        rate, p50, p99 = await single_round_trips(n, one)
    finally:
        transport.close()
    return {
        "floor_single_pages_per_s": rate,
        "floor_single_p50_us": p50,
        "floor_single_p99_us": p99,
    }


async def measure_ours(
    port: int, server_pid: int, secret: str, plan: Plan, *, encrypt: bool = True
) -> dict[str, float]:
    """Every figure of our RPC against the child server (keys end in _plain without encryption)."""
    from ramster.rpc import Secret

    config = RpcConfig(cluster=CLUSTER, max_in_flight=256, call_timeout=30.0, encrypt=encrypt)
    client = RpcClient("127.0.0.1", port, Secret(secret.encode()), config)
    payload = os.urandom(PAGE)
    batches = [
        PageBatch.of((0, b * BATCH + j, 1, 0x1234, payload) for j in range(BATCH))
        for b in range(WORKING_SET // BATCH)
    ]
    key_batches = [batch.keys for batch in batches]
    singles = [PageBatch.of([(1, i, 1, 0x1234, payload)]) for i in range(WORKING_SET)]
    single_keys = [Keys([1], [i]) for i in range(WORKING_SET)]
    out: dict[str, float] = {}
    try:

        async def put_one(i: int) -> object:
            return await client.put_pages(singles[i % WORKING_SET])

        async def get_one(i: int) -> object:
            got = await client.get_pages(single_keys[i % WORKING_SET])
            assert len(got) == 1
            return got

        async def put_batch(i: int) -> int:
            await client.put_pages(batches[i % len(batches)])
            return BATCH

        async def get_batch(i: int) -> int:
            got = await client.get_pages(key_batches[i % len(key_batches)])
            return len(got)

        rate, p50, p99 = await single_round_trips(plan.single_calls, put_one)
        out.update(single_put_pages_per_s=rate, single_put_p50_us=p50, single_put_p99_us=p99)
        rate, p50, p99 = await single_round_trips(plan.single_calls, get_one)
        out.update(single_get_pages_per_s=rate, single_get_p50_us=p50, single_get_p99_us=p99)
        out["put_batch_pages_per_s"], _ = await batched(plan.seconds, IN_FLIGHT, put_batch)
        got = await client.get_pages(key_batches[0])
        assert len(got) == BATCH and bytes(got.payloads[0]) == payload
        cpu0 = cpu_seconds(server_pid)
        out["get_batch_pages_per_s"], pages = await batched(plan.seconds, IN_FLIGHT, get_batch)
        out["server_cpu_us_per_batched_get"] = (cpu_seconds(server_pid) - cpu0) / pages * 1e6
        assert client._conns[0].encrypted is encrypt
    finally:
        await client.close()
    if encrypt:
        return out
    return {f"{k.removesuffix('_per_s')}_plain_per_s" if k.endswith("_per_s") else f"{k}_plain": v
            for k, v in out.items()}  # fmt: skip


# -- redis anchors ------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    """redis-server on a free loopback port, persistence off."""
    port = free_port()
    with spawning_on(SERVER_CPU):
        proc = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc, port
    proc.kill()
    raise SystemExit("redis-server did not start")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Stop redis-server."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_benchmark(port: int, pid: int, requests: int) -> dict[str, float]:
    """redis-benchmark -d 4096 -P 64 for SET, then GET: requests per second, and the CPU
    redis-server spent per GET."""
    rates: dict[str, float] = {}
    cpu_per_get = 0.0
    for test in ("set", "get"):
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-d", str(PAGE), "-P", "64"]
        cmd += ["-n", str(requests), "-t", test, "--csv"]
        cpu0 = cpu_seconds(pid)
        text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        cpu_per_get = (cpu_seconds(pid) - cpu0) / requests * 1e6
        for row in csv.reader(io.StringIO(text)):
            if len(row) >= 2 and row[0] in ("SET", "GET"):
                rates[row[0]] = float(row[1])
    return {
        "redis_benchmark_set_per_s": rates["SET"],
        "redis_benchmark_get_per_s": rates["GET"],
        "redis_server_cpu_us_per_batched_get": cpu_per_get,
    }


def redis_py(port: int, ops: int) -> dict[str, float]:
    """redis-py: one command per round trip, and pipelines of 64."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    value = os.urandom(PAGE)
    keys = [f"page:{i}" for i in range(WORKING_SET)]
    out: dict[str, float] = {}
    try:
        for name, op in (("set", lambda k: r.set(k, value)), ("get", r.get)):
            for i in range(500):
                op(keys[i % WORKING_SET])
            samples: list[int] = []
            clock = time.perf_counter_ns
            start = clock()
            for i in range(ops):
                t0 = clock()
                op(keys[i % WORKING_SET])
                samples.append(clock() - t0)
            elapsed = (clock() - start) / 1e9
            samples.sort()
            out[f"redis_py_single_{name}_per_s"] = ops / elapsed
            out[f"redis_py_single_{name}_p50_us"] = percentile(samples, 0.5)
            out[f"redis_py_single_{name}_p99_us"] = percentile(samples, 0.99)
        for name in ("set", "get"):
            rounds = max(ops // BATCH, 50)
            start_s = time.perf_counter()
            for b in range(rounds):
                pipe = r.pipeline(transaction=False)
                for j in range(BATCH):
                    key = keys[(b * BATCH + j) % WORKING_SET]
                    if name == "set":
                        pipe.set(key, value)
                    else:
                        pipe.get(key)
                pipe.execute()
            out[f"redis_py_pipelined_{name}_per_s"] = (
                rounds * BATCH / (time.perf_counter() - start_s)
            )
    finally:
        r.close()
    return out


def redis_missing() -> bool:
    """True (with a hint on stderr) when redis-server or redis-benchmark is not installed."""
    missing = [tool for tool in ("redis-server", "redis-benchmark") if shutil.which(tool) is None]
    if missing:
        print(f"anchors skipped: {', '.join(missing)} not found; {INSTALL_REDIS}", file=sys.stderr)
    return bool(missing)


def measure_redis(port: int, pid: int, plan: Plan) -> dict[str, float]:
    """One round of every redis anchor."""
    out = redis_benchmark(port, pid, plan.redis_requests)
    try:
        out.update(redis_py(port, plan.redis_py_ops))
    except ImportError:
        print("redis-py anchors skipped: pip install redis", file=sys.stderr)
    return out


# -- report -------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded, or None when either is missing."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def fmt(value: float | None, unit: str) -> str:
    """A figure for the table."""
    if value is None:
        return "-"
    return f"{value:,.0f} {unit}" if unit != "us" else f"{value:,.1f} us"


def rate_row(label: str, figures: dict[str, float], key: str, unit: str) -> list[str]:
    """A table row: rate, and p50/p99 when the figures have them."""
    base = key.removesuffix("_per_s")
    if base.endswith("_pages"):
        base = base.removesuffix("_pages")
    p50 = figures.get(f"{base}_p50_us")
    p99 = figures.get(f"{base}_p99_us")
    return [label, fmt(figures.get(key), unit), fmt(p50, "us"), fmt(p99, "us")]


def report(figures: dict[str, float], quick: bool, rounds: int) -> dict[str, object]:
    """Print the tables; return the JSON record."""
    get = figures.get
    result: dict[str, object] = {
        "put_batch_pages_per_s": round(figures["put_batch_pages_per_s"]),
        "get_batch_pages_per_s": round(figures["get_batch_pages_per_s"]),
        "single_get_p50_us": round(figures["single_get_p50_us"], 1),
        "put_vs_redis_benchmark": ratio(
            get("put_batch_pages_per_s"), get("redis_benchmark_set_per_s")
        ),
        "get_vs_redis_benchmark": ratio(
            get("get_batch_pages_per_s"), get("redis_benchmark_get_per_s")
        ),
        "single_get_p50_vs_redis_py": ratio(
            get("single_get_p50_us"), get("redis_py_single_get_p50_us")
        ),
        "server_cpu_vs_redis": ratio(
            get("server_cpu_us_per_batched_get"), get("redis_server_cpu_us_per_batched_get")
        ),
        "put_batch_encrypted_vs_plain": ratio(
            get("put_batch_pages_per_s"), get("put_batch_pages_plain_per_s")
        ),
        "get_batch_encrypted_vs_plain": ratio(
            get("get_batch_pages_per_s"), get("get_batch_pages_plain_per_s")
        ),
    }
    result.update({k: round(v, 1) for k, v in figures.items() if k not in result})
    result.update(
        page_bytes=PAGE,
        batch_pages=BATCH,
        calls_in_flight=IN_FLIGHT,
        loop=loop_name(),
        placement=placement(),
        rounds=rounds,
        quick=quick,
    )
    rows = [
        rate_row("ramster rpc: put, 1 page/call", figures, "single_put_pages_per_s", "pages/s"),
        rate_row("ramster rpc: get, 1 page/call", figures, "single_get_pages_per_s", "pages/s"),
        rate_row(
            f"ramster rpc: put, {BATCH}-page batches x{IN_FLIGHT}",
            figures,
            "put_batch_pages_per_s",
            "pages/s",
        ),
        rate_row(
            f"ramster rpc: get, {BATCH}-page batches x{IN_FLIGHT}",
            figures,
            "get_batch_pages_per_s",
            "pages/s",
        ),
        rate_row(
            f"  encryption off: put, {BATCH}-page batches x{IN_FLIGHT}",
            figures,
            "put_batch_pages_plain_per_s",
            "pages/s",
        ),
        rate_row(
            f"  encryption off: get, {BATCH}-page batches x{IN_FLIGHT}",
            figures,
            "get_batch_pages_plain_per_s",
            "pages/s",
        ),
        rate_row(
            "  encryption off: get, 1 page/call", figures, "single_get_pages_plain_per_s", "pages/s"
        ),
        rate_row(
            "floor: bare asyncio Protocol, 1 page/trip",
            figures,
            "floor_single_pages_per_s",
            "pages/s",
        ),
        rate_row("redis-benchmark -P 64: SET", figures, "redis_benchmark_set_per_s", "ops/s"),
        rate_row("redis-benchmark -P 64: GET", figures, "redis_benchmark_get_per_s", "ops/s"),
        rate_row("redis-py: SET, 1/round trip", figures, "redis_py_single_set_per_s", "ops/s"),
        rate_row("redis-py: GET, 1/round trip", figures, "redis_py_single_get_per_s", "ops/s"),
        rate_row(
            f"redis-py: SET, pipelined by {BATCH}", figures, "redis_py_pipelined_set_per_s", "ops/s"
        ),
        rate_row(
            f"redis-py: GET, pipelined by {BATCH}", figures, "redis_py_pipelined_get_per_s", "ops/s"
        ),
    ]
    print(
        f"{PAGE}-byte values over 127.0.0.1, loop {loop_name()}, {placement()}; "
        f"medians of {rounds} interleaved rounds"
    )
    print(table(["measurement", "rate", "p50", "p99"], rows))
    print()
    goals = [
        ["put batch / redis-benchmark SET", result["put_vs_redis_benchmark"], ">= 0.6"],
        ["get batch / redis-benchmark GET", result["get_vs_redis_benchmark"], ">= 0.6"],
        ["single get p50 / redis-py GET p50", result["single_get_p50_vs_redis_py"], "<= 0.6"],
        ["server CPU per batched get / redis's", result["server_cpu_vs_redis"], "<= 3"],
        [
            "put batch: encrypted / encryption off",
            result["put_batch_encrypted_vs_plain"],
            ">= 0.85",
        ],
        [
            "get batch: encrypted / encryption off",
            result["get_batch_encrypted_vs_plain"],
            ">= 0.85",
        ],
    ]
    print(table(["ratio", "value", "goal"], [[a, "-" if b is None else b, c] for a, b, c in goals]))
    return result


def main() -> None:
    """Run every measurement, print the table, then the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="about a minute in all")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run(serve())
        return
    plan = QUICK if args.quick else FULL
    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})
    secret = secrets.token_hex(32)
    rounds: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        proc, port, bare_port = start_child(secret)
        stack.callback(stop_child, proc)
        redis_port = redis_pid = None
        if not redis_missing():
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
            redis_proc, redis_port = start_redis(workdir)
            redis_pid = redis_proc.pid
            stack.callback(stop_redis, redis_proc)
        for i in range(plan.rounds):
            print(f"round {i + 1}/{plan.rounds}", file=sys.stderr, flush=True)
            # Alternate which goes first, so that neither always gets the fresher machine.
            modes = (True, False) if i % 2 == 0 else (False, True)
            figures = {}
            for encrypt in modes:
                figures.update(run(measure_ours(port, proc.pid, secret, plan, encrypt=encrypt)))
            figures.update(run(measure_floor(bare_port, plan.single_calls)))
            if redis_port is not None and redis_pid is not None:
                figures.update(measure_redis(redis_port, redis_pid, plan))
            rounds.append(figures)
    medians = {key: statistics.median(r[key] for r in rounds if key in r) for key in rounds[0]}
    print(json.dumps(report(medians, args.quick, plan.rounds)))


if __name__ == "__main__":
    main()
