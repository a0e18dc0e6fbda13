"""One measured run: start a target, boot the guest against it, collect both sides."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramster.testing.kernel.assets import Guest
from ramster.testing.kernel.console import GuestRun
from ramster.testing.kernel.targets import Target
from ramster.testing.kernel.vm import Boot, Workload, boot


@dataclass
class Outcome:
    """A guest run and what the target's side showed."""

    target: str
    guest: GuestRun
    server: dict[str, Any] = field(default_factory=dict)
    """Counters from the server (error replies, refused pages, where pages live)."""
    rss_bytes: int = 0
    """The server processes' RSS when the workload ended (0 for zram)."""
    events: list[str] = field(default_factory=list)
    """What the harness did during the run (a node killed, ...), with the guest's time."""

    def describe(self) -> str:
        """Everything a failing assertion should show."""
        return (
            f"{self.target}: {self.guest.summary()}\nserver: {self.server}\n"
            f"events: {self.events}\nmismatch lines: {self.guest.mismatch_lines[:5]}\n"
            f"console tail:\n{self.guest.tail()}"
        )


def run_target(
    target: Target,
    guest: Guest,
    accel: str,
    workload: Workload,
    memory_mib: int,
    timeout: float,
    on_line: Callable[[str, Target], str | None] | None = None,
    nbd_options: tuple[str, ...] = (),
    zram_mib: int = 0,
    client: str = "nbd-client",
    reconnect_timeouts: tuple[int, int] = (5, 60),
) -> Outcome:
    """Start `target`, boot against it (bounded by `timeout`), stop it; `on_line(line, target)`
    sees every console line and may return a note of what it did (kept in `events`)."""
    target.workdir.mkdir(parents=True, exist_ok=True)
    events: list[str] = []
    rss = 0
    server: dict[str, Any] = {}
    try:
        port = target.start()
        spec = Boot(
            target.mode,
            memory_mib=memory_mib,
            workload=workload,
            port=port,
            export=target.export,
            nbd_options=nbd_options,
            zram_mib=zram_mib,
            client=client,
            reconnect_timeouts=reconnect_timeouts,
        )
        t0 = time.monotonic()

        def line_seen(line: str) -> None:
            nonlocal rss
            if line.startswith("RESULT ") or line.startswith("RK WORKLOAD-EXIT"):
                rss = rss or target.rss()
            if on_line is not None:
                note = on_line(line, target)
                if note:
                    events.append(f"{time.monotonic() - t0:.1f}s {note}")

        run = boot(
            guest,
            spec,
            accel,
            timeout,
            on_line=line_seen,
            log=target.workdir / f"console-{target.name.replace(' ', '-')}.log",
        )
        server = target.report()
    finally:
        server.update(target.stop())
    return Outcome(target.name, run, server, rss, events)


def killer(node: int, at: str) -> Callable[[str, Target], str | None]:
    """An `on_line` that kills -9 cluster node `node` when the console line starts with `at`
    (e.g. "PROGRESS 0 50": half-way through the fill pass)."""
    done = False

    def on_line(line: str, target: Target) -> str | None:
        nonlocal done
        if done or not line.startswith(at):
            return None
        done = True
        kill = getattr(target, "kill", None)
        if kill is None:
            return None
        kill(node)
        return f"kill -9 node k{node} at {line!r}"

    return on_line


@dataclass
class Restart:
    """An `on_line` that kills -9 cluster node `node` when the console line starts with `at`
    and starts it again at once (same id, ports and state), and times what the guest saw."""

    at: str
    node: int = 0
    killed: float = 0.0
    """time.monotonic() of the kill (0: not yet)."""
    serving_after: float = 0.0
    """Seconds from the kill until the restarted node served again (listening, for k0)."""
    resumed_after: float = 0.0
    """Seconds from the kill until the workload's next PROGRESS or PASS line: how long the
    guest stalled, the restart and the reconnect included (0: it never went on)."""

    def __call__(self, line: str, target: Target) -> str | None:
        if self.killed:
            if not self.resumed_after and line.startswith(("PROGRESS ", "PASS ")):
                self.resumed_after = time.monotonic() - self.killed
                return f"the workload went on {self.resumed_after:.1f}s after the kill: {line!r}"
            return None
        restart = getattr(target, "restart", None)
        if restart is None or not line.startswith(self.at):
            return None
        self.killed = time.monotonic()
        self.serving_after = restart(self.node)
        return (
            f"kill -9 node k{self.node} at {line!r}, restarted; "
            f"serving again after {self.serving_after:.1f}s"
        )


def guest_log_dir(base: Path, name: str) -> Path:
    """A fresh directory for one run's logs."""
    path = base / name.replace(" ", "-")
    path.mkdir(parents=True, exist_ok=True)
    return path
