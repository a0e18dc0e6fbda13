"""CPU time read from /proc, as the benchmarks and `ramster bench` use it."""

from __future__ import annotations

import os
import threading
import time

from ramster.testing.cpu import cpu_of, cpu_seconds, live_cpu_seconds


def _spin(seconds: float) -> None:
    t0 = time.thread_time()
    while time.thread_time() - t0 < seconds:
        pass


def test_both_clocks_follow_work() -> None:
    pid = os.getpid()
    before, live_before = cpu_seconds(pid), live_cpu_seconds(pid)
    _spin(0.2)
    # stat counts in clock ticks (10 ms here), schedstat in nanoseconds.
    assert 0.17 <= cpu_seconds(pid) - before <= 0.4
    assert 0.19 <= live_cpu_seconds(pid) - live_before <= 0.4
    assert cpu_of([pid])[0] >= live_before + 0.19


def test_stat_keeps_the_time_of_ended_threads() -> None:
    pid = os.getpid()
    before = cpu_seconds(pid)
    worker = threading.Thread(target=_spin, args=(0.2,))
    worker.start()
    worker.join()
    assert cpu_seconds(pid) - before >= 0.17
