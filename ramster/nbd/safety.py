"""Keep a swap server from waiting on itself: the memory it runs in must not be swapped out,
the OOM killer must not pick it, and its own writes must not be throttled by the reclaim they
serve. Each step is done where the OS allows it; what it refuses is said in one log line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MCL_CURRENT = 1
MCL_ONFAULT = 4
PR_SET_IO_FLUSHER = 57
OOM_SCORE_ADJ_MIN = -1000


@dataclass(frozen=True, slots=True)
class SafetyReport:
    """Why each step was refused (None: it is in place)."""

    mlock: str | None
    oom_score_adj: str | None
    io_flusher: str | None

    def line(self) -> str:
        """One log line of the whole report."""
        parts = []
        for step, failure in (
            ("mlockall", self.mlock),
            ("oom_score_adj -1000", self.oom_score_adj),
            ("PR_SET_IO_FLUSHER", self.io_flusher),
        ):
            parts.append(f"{step}: {'ok' if failure is None else 'refused, ' + failure}")
        return "nbd swap safety: " + "; ".join(parts)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def lock_memory(libc: ctypes.CDLL) -> str | None:
    """mlockall the mappings that exist now (code, libraries, interpreter), locked as they fault.

    Not MCL_FUTURE: the page pool returns freed slabs with MADV_DONTNEED, which the kernel
    refuses (EINVAL) on locked memory, so the pool's own mappings must stay unlocked. Call this
    before the pool is created."""
    if libc.mlockall(MCL_CURRENT | MCL_ONFAULT) == 0:
        return None
    return f"{os.strerror(ctypes.get_errno())} (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)"


def protect_from_oom(path: Path = Path("/proc/self/oom_score_adj")) -> str | None:
    """oom_score_adj -1000: the OOM killer never picks the process serving swap."""
    try:
        path.write_text(f"{OOM_SCORE_ADJ_MIN}\n")
    except OSError as exc:
        return f"{exc.strerror} (needs CAP_SYS_RESOURCE)"
    return None


def become_io_flusher(libc: ctypes.CDLL) -> str | None:
    """PR_SET_IO_FLUSHER (Linux 5.6+): this thread's allocations do not recurse into I/O and its
    writes are not throttled by the writeback they serve. Only the calling thread is marked: call
    it from the thread that runs the event loop."""
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0:
        return None
    return f"{os.strerror(ctypes.get_errno())} (needs CAP_SYS_RESOURCE and Linux 5.6+)"


def protect() -> SafetyReport:
    """All three steps; whatever the OS refuses is one warning, never an error."""
    libc = _libc()
    report = SafetyReport(
        mlock=lock_memory(libc),
        oom_score_adj=protect_from_oom(),
        io_flusher=become_io_flusher(libc),
    )
    if report.mlock or report.oom_score_adj or report.io_flusher:
        log.warning("%s", report.line())
    else:
        log.info("%s", report.line())
    return report
