"""CPU time of processes, read before and after a timed phase (benchmarks, `ramster bench`)."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_of(pids: list[int]) -> list[float]:
    """cpu_seconds of each pid."""
    return [cpu_seconds(pid) for pid in pids]
