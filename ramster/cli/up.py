"""`ramster up`: a local cluster of node processes on loopback, for trying ramster out.

It is what `make run` starts: N nodes with small budgets (so pages really spill), a generated
cluster secret in a private file, one log file per node, a short bench through the first node,
then it keeps the cluster running until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ramster.cli import pages
from ramster.cli.options import Access
from ramster.client import Client
from ramster.errors import RamsterError
from ramster.rpc import RpcConfig, Secret, load_secret
from ramster.rpc.loop import run


@dataclass(frozen=True, slots=True)
class DevCluster:
    """Where the local cluster lives."""

    state_dir: Path
    ports: tuple[int, ...]
    secret_file: Path
    admin_ports: tuple[int, ...] = ()
    token_file: Path | None = None

    def address(self, i: int) -> str:
        """RPC address of node i."""
        return f"127.0.0.1:{self.ports[i]}"

    def admin_url(self, i: int) -> str:
        """Admin API and dashboard of node i."""
        return f"http://127.0.0.1:{self.admin_ports[i]}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _secret_file(state_dir: Path, name: str = "cluster.secret") -> Path:
    path = state_dir / name
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    return path


def start_nodes(
    nodes: int,
    base_port: int,
    state_dir: Path,
    local_budget: str,
    lent_budget: str,
    admin_port: int = 7171,
) -> tuple[DevCluster, list[subprocess.Popen[bytes]]]:
    """Launch the node processes (their logs go to state_dir/nodeN.log)."""
    ports = tuple(range(base_port, base_port + nodes))
    admin_ports = tuple(range(admin_port, admin_port + nodes))
    busy = [p for p in (*ports, *admin_ports) if not _port_free(p)]
    if busy:
        raise RuntimeError(
            f"port {busy[0]} on 127.0.0.1 is in use (is another `make run` running?); "
            "choose others with --base-port and --admin-port"
        )
    secret_file = _secret_file(state_dir)
    token_file = _secret_file(state_dir, "admin.token")
    cluster = DevCluster(state_dir, ports, secret_file, admin_ports, token_file)
    procs = []
    for i, port in enumerate(ports):
        peers = [f"--peer=127.0.0.1:{p}" for p in ports if p != port]
        log_path = state_dir / f"node{i + 1}.log"
        with log_path.open("ab") as log_file:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "ramster",
                        "node",
                        f"--node-id=node{i + 1}",
                        f"--listen=127.0.0.1:{port}",
                        f"--secret-file={secret_file}",
                        f"--state-dir={state_dir / f'node{i + 1}'}",
                        f"--local-budget={local_budget}",
                        f"--lent-budget={lent_budget}",
                        f"--admin=127.0.0.1:{admin_ports[i]}",
                        f"--admin-token-file={token_file}",
                        *peers,
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
    return cluster, procs


async def wait_ready(cluster: DevCluster, secret: Secret, within: float = 20.0) -> None:
    """Return when every node answers and sees all its peers alive."""
    deadline = time.monotonic() + within
    want = len(cluster.ports) - 1
    for i in range(len(cluster.ports)):
        while True:
            try:
                async with Client(cluster.address(i), secret) as client:
                    st = await client.stats()
                if sum(p["alive"] for p in st["peers"]) >= want:
                    break
            except (RamsterError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {i + 1} at {cluster.address(i)} did not become ready")
            await asyncio.sleep(0.2)


def stop_nodes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every node, wait, SIGKILL stragglers."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up(
    nodes: int,
    base_port: int,
    state_dir: Path,
    local_budget: str,
    lent_budget: str,
    bench_mib: int,
    stay: bool,
    admin_port: int = 7171,
) -> int:
    """Run the local cluster; with stay, until Ctrl-C."""
    cluster, procs = start_nodes(nodes, base_port, state_dir, local_budget, lent_budget, admin_port)
    try:
        secret = load_secret(cluster.secret_file)
        print(f"starting {nodes} nodes on 127.0.0.1:{cluster.ports[0]}-{cluster.ports[-1]} ...")
        try:
            run(wait_ready(cluster, secret))
        except TimeoutError as exc:
            print(f"ramster up: {exc}; see the logs in {state_dir}", file=sys.stderr)
            return 1
        print(f"cluster ready: {nodes} nodes, local budget {local_budget}, lent {lent_budget}")
        status = 0
        if bench_mib:
            access = Access(secret, RpcConfig())
            status = pages.bench(cluster.address(0), access, bench_mib, 256, 1, 0)
        env = f"RAMSTER_SECRET_FILE={cluster.secret_file}"
        print()
        print("talk to it (from this directory):")
        print(f"  {env} .venv/bin/ramster stats --node {cluster.address(0)}")
        print(f"  {env} .venv/bin/ramster bench --node {cluster.address(1)} --mib 32")
        print(f"  .venv/bin/ramster status --admin {cluster.admin_url(0)}")
        print(
            f"  RAMSTER_ADMIN_TOKEN_FILE={cluster.token_file} .venv/bin/ramster drain node3 "
            f"--admin {cluster.admin_url(0)}"
        )
        print(f"dashboard: {cluster.admin_url(0)}/")
        print(f"logs: {state_dir}/node*.log")
        if not stay:
            return status
        print("the cluster keeps running; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
        dead = [i + 1 for i, p in enumerate(procs) if p.poll() is not None]
        if dead:
            print(f"node(s) {dead} exited; see their logs in {state_dir}", file=sys.stderr)
            return 1
        return status
    finally:
        print("stopping the cluster ...")
        stop_nodes(procs)
