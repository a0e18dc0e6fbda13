"""CPU time of processes, read before and after a timed phase (benchmarks, `ramster bench`)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process so far, ended threads included (10 ms ticks:
    for phases of seconds, or servers whose threads come and go, like nbdkit's)."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def live_cpu_seconds(pid: int) -> float:
    """CPU seconds of the process's live threads, in nanoseconds from their schedstat: for
    phases of a tenth of a second in processes whose threads persist (ramster's nodes, its
    RPC server, redis-server). Falls back on `cpu_seconds` without schedstat."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.joinpath(str(pid), "schedstat").exists():
        return cpu_seconds(pid)
    total = 0
    for task in tasks.iterdir():
        try:
            total += int(task.joinpath("schedstat").read_bytes().split()[0])
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
    return total / 1e9


def cpu_of(pids: list[int]) -> list[float]:
    """live_cpu_seconds of each pid."""
    return [live_cpu_seconds(pid) for pid in pids]
