"""Swap safety in a process of its own: what it locks must not break the pool's frees."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os
    from ramster.nbd import safety
    report = safety.protect()
    from ramster.testing import corpus
    from ramster.frontswap import LocalFrontswap
    from ramster.pagestore import PoolConfig

    async def churn():
        fs = LocalFrontswap(PoolConfig(budget_bytes=64 << 20))
        await fs.init(0)
        pages = corpus.pages(4096, seed=4)
        for _ in range(3):
            await fs.store_many(0, list(range(4096)), pages)
            # Freeing every page empties slabs: the pool hands them back with MADV_DONTNEED,
            # which the kernel refuses on memory locked by mlockall(MCL_FUTURE).
            await fs.invalidate_many(0, list(range(4096)))
        return fs.statistics().pool.stored_pages

    left = asyncio.run(churn())
    status = open("/proc/self/status").read()
    locked = int(status.split("VmLck:")[1].split()[0])
    print(json.dumps({"report": [report.mlock, report.oom_score_adj, report.io_flusher],
                      "left": left, "locked_kib": locked}))
    """
)


def test_protect_keeps_the_pool_working_and_says_what_it_could_not_do() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["left"] == 0
    mlock, oom, flusher = result["report"]
    if mlock is None:
        assert result["locked_kib"] > 0
    refused = [r for r in (mlock, oom, flusher) if r is not None]
    # Whatever the OS refused is said in one log line, never an error.
    lines = [line for line in out.stderr.splitlines() if "nbd swap safety" in line]
    assert len(lines) == (1 if refused else 0), out.stderr
    assert all(reason in lines[0] for reason in refused)
