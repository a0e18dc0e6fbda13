"""Keep a swap server from waiting on itself: the memory it runs in must not be swapped out,
the OOM killer must not pick it, and its own writes must not be throttled by the reclaim they
serve. Each step is done where the OS allows it; where it does not, one log line says so.
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
    """What was put in place (True) or not (False)."""

    mlocked: bool
    oom_protected: bool
    io_flusher: bool


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def lock_memory(libc: ctypes.CDLL | None = None) -> bool:
    """mlockall the mappings that exist now (code, libraries, interpreter), locked as they fault.

    Not MCL_FUTURE: the page pool returns freed slabs with MADV_DONTNEED, which the kernel
    refuses (EINVAL) on locked memory, so the pool's own mappings are left unlocked. Call this
    before the pool is created."""
    libc = libc or _libc()
    if libc.mlockall(MCL_CURRENT | MCL_ONFAULT) == 0:
        return True
    err = ctypes.get_errno()
    log.warning(
        "nbd: mlockall failed (%s); the server's memory may be swapped out "
        "(needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)",
        os.strerror(err),
    )
    return False


def protect_from_oom(path: Path = Path("/proc/self/oom_score_adj")) -> bool:
    """oom_score_adj -1000: the OOM killer never picks the process serving swap."""
    try:
        path.write_text(f"{OOM_SCORE_ADJ_MIN}\n")
    except OSError as exc:
        log.warning(
            "nbd: cannot set oom_score_adj to -1000 (%s; needs CAP_SYS_RESOURCE)", exc.strerror
        )
        return False
    return True


def become_io_flusher(libc: ctypes.CDLL | None = None) -> bool:
    """PR_SET_IO_FLUSHER (Linux 5.6+): this thread's allocations do not recurse into I/O and its
    writes are not throttled by the writeback they serve. Only the calling thread is marked: call
    it from the thread that runs the event loop."""
    libc = libc or _libc()
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0:
        return True
    err = ctypes.get_errno()
    log.warning(
        "nbd: PR_SET_IO_FLUSHER not set (%s; needs CAP_SYS_RESOURCE and Linux 5.6+)",
        os.strerror(err),
    )
    return False


def protect() -> SafetyReport:
    """All three steps; each failure is one warning, never an error."""
    libc = _libc()
    report = SafetyReport(
        mlocked=lock_memory(libc),
        oom_protected=protect_from_oom(),
        io_flusher=become_io_flusher(libc),
    )
    log.info(
        "nbd swap safety: mlockall=%s oom_score_adj=%s io_flusher=%s",
        report.mlocked,
        report.oom_protected,
        report.io_flusher,
    )
    return report
