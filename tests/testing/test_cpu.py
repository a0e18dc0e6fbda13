"""CPU time read from /proc, as the benchmarks and `ramster bench` use it."""

from __future__ import annotations

import os
import time

from ramster.testing.cpu import cpu_of, cpu_seconds


def test_cpu_seconds_follows_work_and_matches_process_time() -> None:
    before = cpu_seconds(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.2:
        pass
    spent = cpu_seconds(os.getpid()) - before
    # /proc counts in clock ticks (10 ms here): within two ticks of the process clock.
    assert 0.2 - 0.03 <= spent <= time.process_time() - t0 + 0.03
    assert cpu_of([os.getpid()])[0] >= before + spent - 0.01
