"""A cluster of real `ramster node` processes, on loopback or one per network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramster.client import Client
from ramster.errors import RamsterError
from ramster.rpc import RpcConfig, Secret
from ramster.testing.netns import NetnsLab
from ramster.testing.wait import wait_until

SECRET = b"test-secret-0123456789abcdef0123"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NodeProc:
    """One node process and how to start it again."""

    index: int
    port: int
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    """What runs the node (e.g. `ip netns exec NS`), before the interpreter."""

    @property
    def address(self) -> str:
        """host:port of its RPC."""
        return f"{self.host}:{self.port}"

    @property
    def node_id(self) -> str:
        """Its node id."""
        return f"n{self.index}"


@dataclass
class Cluster:
    """Nodes n0..n(N-1); node 0 is the usual owner in tests."""

    tmp: Path
    secret: Secret
    name: str = "ramster"
    nodes: list[NodeProc] = field(default_factory=list)
    rpc: RpcConfig | None = None
    """How clients of the test reach the nodes (TLS settings, say); default: the cluster name."""

    def start(self, i: int) -> None:
        """Start node i (again), logging to its file."""
        node = self.nodes[i]
        with node.log.open("ab") as log:
            node.proc = subprocess.Popen(
                [*node.prefix, sys.executable, "-m", "ramster", "node", *node.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def start_all(self, within: float = 20) -> None:
        """Start every node and wait until they all see each other."""
        for i in range(len(self.nodes)):
            self.start(i)
        await self.wait_ready(within=within)

    async def wait_stats(
        self, i: int, check: Callable[[dict[str, Any]], bool], within: float = 10.0
    ) -> dict[str, Any]:
        """Poll node i's stats until check(stats) holds or time is up; the last stats (the
        caller asserts on them, so that a failure shows what was seen)."""
        last: dict[str, Any] = {}

        async def probe() -> bool:
            nonlocal last
            last = await self.stats(i)
            return check(last)

        with contextlib.suppress(TimeoutError):
            await wait_until(probe, within, f"n{i}'s stats")
        return last

    async def settle_copies(
        self, owner: int, holders: list[int], replicas: int = 2, within: float = 20.0
    ) -> tuple[int, int]:
        """Wait until the holders keep exactly `replicas` copies of the owner's remote pages
        (moves and orphan drops finished); (copies held, the owner's remote pages)."""
        last = (0, 0)

        async def settled() -> bool:
            nonlocal last
            held = 0
            for i in holders:
                held += (await self.stats(i))["lent"]["stored_pages"]
            st = await self.stats(owner)
            last = (held, int(st["pool"]["remote_pages"]))
            return held == replicas * last[1] and st["orphans_pending"] == 0

        with contextlib.suppress(TimeoutError):
            await wait_until(settled, within, "copies settled", every=0.2)
        return last

    def kill(self, i: int) -> None:
        """kill -9 node i."""
        proc = self.nodes[i].proc
        assert proc is not None
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        """SIGTERM every node, then SIGKILL what is left after 10 s."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    async def admin_url(self, i: int) -> str:
        """http://host:port of node i's admin API (it listens on a port of its choosing)."""
        address = (await self.stats(i))["admin"]
        if not address:
            raise RuntimeError(f"node n{i} serves no admin API")
        return f"http://{address}"

    def client(self, i: int = 0) -> Client:
        """A client of node i."""
        return Client(self.nodes[i].address, self.secret, self.rpc or RpcConfig(cluster=self.name))

    async def stats(self, i: int) -> dict[str, Any]:
        """node.stats of node i."""
        async with self.client(i) as client:
            return await client.stats()

    async def wait_ready(self, indices: list[int] | None = None, within: float = 20) -> None:
        """Every named node answers and sees every other live node of the cluster."""
        indices = list(range(len(self.nodes))) if indices is None else indices
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for i in indices:

            async def sees_all(i: int = i) -> bool:
                try:
                    st = await self.stats(i)
                except (RamsterError, OSError):
                    return False  # not listening yet
                alive = {p["node"] for p in st["peers"] if p["alive"]}
                return {f"n{j}" for j in indices if j != i} <= alive

            try:
                await wait_until(sees_all, max(0.0, deadline - loop.time()), f"n{i} ready")
            except TimeoutError:
                log = self.nodes[i].log.read_text()[-2000:]
                raise TimeoutError(f"node n{i} not ready; log tail:\n{log}") from None


def make_cluster(
    tmp: Path,
    n: int,
    local_budget: str = "4MiB",
    lent_budget: str = "32MiB",
    replicas: int = 2,
    extra: list[str] | None = None,
    static_peers: bool = True,
    cluster_name: str = "ramster",
    lab: NetnsLab | None = None,
) -> Cluster:
    tmp.mkdir(parents=True, exist_ok=True)
    secret_file = tmp / "secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    token_file = tmp / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    cluster = Cluster(tmp, Secret(SECRET), cluster_name)
    hosts = [lab.addr(i) if lab else "127.0.0.1" for i in range(n)]
    ports = [7070 if lab else free_port() for _ in range(n)]
    for i, (host, port) in enumerate(zip(hosts, ports, strict=True)):
        mdns = [f"--mdns-interface={host}"] if lab else []
        peers = [
            f"--peer={h}:{p}" for h, p in zip(hosts, ports, strict=True) if (h, p) != (host, port)
        ]
        args = [
            f"--node-id=n{i}",
            f"--listen={host}:{port}",
            f"--secret-file={secret_file}",
            f"--state-dir={tmp / f'n{i}'}",
            f"--local-budget={local_budget}",
            f"--lent-budget={lent_budget}",
            f"--replicas={replicas}",
            "--heartbeat=0.2",
            "--dead-after=1.5",
            f"--cluster={cluster_name}",
            "--admin=127.0.0.1:0",
            f"--admin-token-file={token_file}",
            "--test-hooks",
            *mdns,
            *(peers if static_peers else []),
            *(extra or []),
        ]
        prefix = lab.exec_args(i, []) if lab else []
        cluster.nodes.append(NodeProc(i, port, args, tmp / f"n{i}.log", host=host, prefix=prefix))
    return cluster
