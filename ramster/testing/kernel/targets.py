"""What the guest swaps to: `ramster nbd`, a cluster of `ramster node`s, nbdkit, or zram.

Servers are subprocesses started here, listening on 127.0.0.1 only; each target stops exactly
the processes it started (SIGTERM, then SIGKILL after 10 s). ramster runs through its CLI
(`python -m ramster ...`), as a user would, never imported.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramster.testing.kernel.assets import AssetError

LISTENING = re.compile(r"nbd: export \S+ \(.*\) listening on 127\.0\.0\.1:(\d+)")
"""The NBD server's line once it listens (`ramster nbd` and `ramster node --nbd` alike)."""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers that need a number up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """One process a target started, with its log."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    offset: int = 0
    """Where this start's output begins in the log (a log may hold earlier runs)."""

    def start(self) -> None:
        """Start it, output appended to its log."""
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        """Started and not ended."""
        return self.proc is not None and self.proc.poll() is None

    def wait_log(self, pattern: re.Pattern[str], within: float = START_TIMEOUT) -> re.Match[str]:
        """The first match of `pattern` in the log; AssetError if the process ends first."""
        deadline = time.monotonic() + within
        while True:
            m = pattern.search(self.output())
            if m:
                return m
            if not self.alive or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssetError(f"{self.name} did not start; its log ends:\n{tail}")
            time.sleep(0.05)

    def output(self) -> str:
        """What this start wrote to the log so far."""
        with self.log.open("rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")

    def wait_port(self, port: int, within: float = START_TIMEOUT) -> None:
        """Until 127.0.0.1:port accepts connections."""
        deadline = time.monotonic() + within
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if not self.alive or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssetError(f"{self.name} did not listen on {port}; log:\n{tail}")
            time.sleep(0.05)

    def rss(self) -> int:
        """Its RSS now (0 if it is not running)."""
        return rss_bytes(self.proc.pid) if self.alive and self.proc else 0

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT; its exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Target:
    """Something the guest swaps to; `start()` returns the NBD port (0 for zram)."""

    name: str
    workdir: Path
    servers: list[Server] = field(default_factory=list)
    mode: str = "nbd"
    export: str = "swap0"

    def start(self) -> int:
        """Start the servers; the port the guest connects to."""
        raise NotImplementedError

    def rss(self) -> int:
        """Bytes resident in the target's live server processes now."""
        return sum(s.rss() for s in self.servers)

    def report(self) -> dict[str, Any]:
        """Server-side counters worth showing (error replies...), read before stop()."""
        return {}

    def stop(self) -> dict[str, Any]:
        """Stop every process this target started; what their exit showed."""
        for server in self.servers:
            server.stop()
        return {}

    def logs(self) -> str:
        """The last lines of every server's log, for a failure message."""
        return "\n".join(
            f"--- {s.name} ({s.log})\n" + s.log.read_text(errors="replace")[-3000:]
            for s in self.servers
            if s.log.exists()
        )


def _python_ramster(*args: str) -> list[str]:
    return [sys.executable, "-m", "ramster", *args]


def _clean_env() -> dict[str, str]:
    # A person's RAMSTER_* settings must not change what a test or benchmark measures.
    return {k: v for k, v in os.environ.items() if not k.startswith("RAMSTER_")}


@dataclass
class RamsterNbd(Target):
    """`ramster nbd`: one export over a local compressed pool."""

    size: str = "512MiB"
    local_budget: str = "512MiB"
    summary: str = ""

    def start(self) -> int:
        server = Server(
            "ramster nbd",
            _python_ramster(
                "nbd",
                "--listen=127.0.0.1:0",
                f"--export={self.export}:{self.size}",
                f"--local-budget={self.local_budget}",
            ),
            self.workdir / "ramster-nbd.log",
            env=_clean_env(),
        )
        self.servers = [server]
        server.start()
        return int(server.wait_log(LISTENING).group(1))

    def stop(self) -> dict[str, Any]:
        super().stop()
        text = self.servers[0].output() if self.servers else ""
        lines = [line for line in text.splitlines() if "nbd statistics:" in line]
        self.summary = lines[-1] if lines else ""
        return nbd_summary(self.summary)


def nbd_summary(line: str) -> dict[str, Any]:
    """The counters of `ramster nbd`'s exit line (error replies by kind, pages refused)."""
    out: dict[str, Any] = {"error_replies": {}}
    m = re.search(r" errors=(\S+)", line)
    if m and m.group(1) != "none":
        for item in m.group(1).split(","):
            kind, _, n = item.partition("=")
            out["error_replies"][kind] = int(n)
    m = re.search(r"refused=(\d+)\]", line)
    if m:
        out["pages_refused"] = int(m.group(1))
    return out


@dataclass
class RamsterCluster(Target):
    """`ramster node` x n on loopback with static peers; node 0 serves the export over NBD.

    Node 0's local budget is small so that most pages spill to the others' lent pools.
    """

    nodes: int = 3
    size: str = "512MiB"
    local_budget: str = "16MiB"
    lent_budget: str = "256MiB"
    replicas: int = 2
    durability: str = ""
    """The export's durability, local or replicated ("": ramster node's default, replicated)."""
    export_node_args: tuple[str, ...] = ()
    """More `ramster node` options for k0 (e.g. its watermarks)."""
    ports: list[int] = field(default_factory=list)
    nbd_port: int = 0
    """k0's NBD port, chosen up front so that a restarted k0 listens where the guest was."""
    last_stats: dict[str, Any] = field(default_factory=dict)

    def start(self) -> int:
        secret = self.workdir / "cluster.secret"
        secret.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
        self.ports = [free_port() for _ in range(self.nodes)]
        self.nbd_port = free_port()
        env = _clean_env()
        for i, port in enumerate(self.ports):
            args = [
                "node",
                f"--node-id=k{i}",
                f"--listen=127.0.0.1:{port}",
                f"--secret-file={secret}",
                f"--state-dir={self.workdir / f'k{i}'}",
                f"--local-budget={self.local_budget if i == 0 else '64MiB'}",
                f"--lent-budget={self.lent_budget}",
                f"--replicas={self.replicas}",
                "--admin=off",
                *(f"--peer=127.0.0.1:{p}" for p in self.ports if p != port),
            ]
            if i == 0:
                export = f"{self.export}:{self.size}" + (
                    f":{self.durability}" if self.durability else ""
                )
                args += [f"--nbd=127.0.0.1:{self.nbd_port}", f"--export={export}"]
                args += self.export_node_args
            self.servers.append(
                Server(
                    f"ramster node k{i}", _python_ramster(*args), self.workdir / f"k{i}.log", env
                )
            )
        for server in self.servers:
            server.start()
        port = int(self.servers[0].wait_log(LISTENING).group(1))
        self.wait_peers()
        return port

    def stats(self, i: int) -> dict[str, Any]:
        """`ramster stats --json` of node i (through the CLI, like a user)."""
        out = subprocess.run(
            _python_ramster("stats", "--json", f"--node=127.0.0.1:{self.ports[i]}"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**_clean_env(), "RAMSTER_SECRET_FILE": str(self.workdir / "cluster.secret")},
        )
        if out.returncode != 0:
            raise AssetError(f"ramster stats of k{i} failed: {out.stderr.strip()}")
        stats: dict[str, Any] = json.loads(out.stdout)
        return stats

    def wait_peers(self, within: float = START_TIMEOUT) -> None:
        """Until node 0 sees every other node alive (it can spill to them)."""
        deadline = time.monotonic() + within
        want = {f"k{i}" for i in range(1, self.nodes)}
        while True:
            try:
                alive = {p["node"] for p in self.stats(0)["peers"] if p["alive"]}
                if want <= alive:
                    return
            except (AssetError, subprocess.TimeoutExpired, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise AssetError(f"the cluster did not form:\n{self.logs()}")
            time.sleep(0.3)

    def kill(self, i: int) -> None:
        """kill -9 node i (a holder when i > 0)."""
        self.servers[i].kill()

    def restart(self, i: int) -> float:
        """Start node i again as it was (same id, ports, state directory) after a kill; for k0,
        until it serves NBD again (it rebuilds the export's index first). Seconds it took."""
        t0 = time.monotonic()
        server = self.servers[i]
        server.kill()
        server.start()
        if i == 0:
            server.wait_log(LISTENING)
        else:
            server.wait_port(self.ports[i])
        return time.monotonic() - t0

    def report(self) -> dict[str, Any]:
        try:
            st = self.stats(0)
        except (AssetError, subprocess.TimeoutExpired, ValueError):
            return {}
        self.last_stats = st
        nbd = st.get("nbd") or {}
        export = (nbd.get("exports") or {}).get(self.export, {})
        return {
            "error_replies": nbd.get("errors", {}),
            "pages_refused": export.get("pages_refused", 0),
            "pages_stored": export.get("pages_stored", 0),
            "local_pages": st["pool"].get("stored_pages", 0),
            "remote_pages": st["pool"].get("remote_pages", 0),
            "under_replicated_pages": st.get("under_replicated_pages", 0),
        }


@dataclass
class Nbdkit(Target):
    """`nbdkit memory SIZE allocator=...` (C, everything in one process)."""

    size: str = "512M"
    allocator: str = "sparse"

    def start(self) -> int:
        nbdkit = shutil.which("nbdkit")
        if nbdkit is None:
            raise AssetError("nbdkit not found (apt-get install nbdkit)")
        port = free_port()
        server = Server(
            f"nbdkit {self.allocator}",
            [
                nbdkit,
                "--foreground",
                "--exit-with-parent",
                "--ipaddr=127.0.0.1",
                f"--port={port}",
                "memory",
                self.size,
                f"allocator={self.allocator}",
            ],
            self.workdir / f"nbdkit-{self.allocator}.log",
        )
        self.servers = [server]
        server.start()
        server.wait_port(port)
        return port


@dataclass
class Zram(Target):
    """The guest's own compressed swap: zram with lz4 (no server; the local ceiling)."""

    zram_mib: int = 512

    def __post_init__(self) -> None:
        self.mode = "zram"

    def start(self) -> int:
        return 0
