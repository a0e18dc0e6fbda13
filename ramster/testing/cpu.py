"""CPU time of processes, read before and after a timed phase (benchmarks, `ramster bench`)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process has used so far, its live threads included.

    Read from each thread's schedstat (nanoseconds: a phase of a tenth of a second is measured
    to the microsecond, where /proc/PID/stat counts 10 ms ticks), falling back on stat's
    user + system ticks where schedstat is missing.
    """
    tasks = Path(f"/proc/{pid}/task")
    if tasks.joinpath(str(pid), "schedstat").exists():
        total = 0
        for task in tasks.iterdir():
            try:
                total += int(task.joinpath("schedstat").read_bytes().split()[0])
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
        return total / 1e9
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_of(pids: list[int]) -> list[float]:
    """cpu_seconds of each pid."""
    return [cpu_seconds(pid) for pid in pids]
