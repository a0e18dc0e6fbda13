"""What the guest printed, read back into figures (pure: no qemu needed to test it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SIGBUS_STATUS = 128 + 7
"""The shell's exit status of a process killed by SIGBUS (a swap-in that failed)."""

ERROR_PATTERNS = {
    "nbd": re.compile(
        r"nbd\d*: (Other side returned error|Connection timed out|Dead connection|"
        r"Receive control failed|Send control failed|Attempted send on invalid socket|"
        r"shutting down sockets|Possible stuck request)|block nbd\d+: .*(error|fail|timed out)",
        re.IGNORECASE,
    ),
    "io": re.compile(r"I/O error|blk_update_request|Buffer I/O error", re.IGNORECASE),
    "swap": re.compile(r"(Write|Read)-error on swap-device", re.IGNORECASE),
}
"""Kernel messages that mean an I/O the guest asked for failed, by kind."""
NOTE_PATTERNS = {
    "alloc_failure": re.compile(r"page allocation failure"),
    "oom": re.compile(r"Out of memory|oom-kill|Killed process"),
    "trace": re.compile(r"Call Trace"),
}
"""Kernel messages worth counting that are not I/O errors."""


@dataclass(frozen=True)
class PassTime:
    """One pass of the workload."""

    index: int
    kind: str
    """fill or verify."""
    seconds: float
    mib_per_s: float


@dataclass
class GuestRun:
    """One boot, as its console showed it."""

    accel: str
    lines: list[str] = field(default_factory=list)
    booted: bool = False
    finished: bool = False
    """The guest reached its last line ("RK DONE") before it powered off."""
    timed_out: bool = False
    panicked: bool = False
    """The guest's kernel panicked (printed on the console whatever the log level)."""
    wall_seconds: float = 0.0
    nbd_client: str = ""
    """nbd-client's status line (return code and options), empty if not run."""
    swapon_ok: bool = False
    passes: list[PassTime] = field(default_factory=list)
    result: dict[str, float] = field(default_factory=dict)
    """The workload's RESULT line: pages, verified, mismatches, rewritten, seconds."""
    mismatch_lines: list[str] = field(default_factory=list)
    exit_status: int | None = None
    vmstat: dict[str, int] = field(default_factory=dict)
    zram_mm: list[int] = field(default_factory=list)
    """zram0's mm_stat (orig_data_size compr_data_size mem_used_total ...) after the workload."""
    dmesg: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    """Kernel messages in `dmesg` by ERROR_PATTERNS kind (nbd, io, swap)."""
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def io_errors(self) -> int:
        """Kernel messages of failed I/O (nbd replies, block layer, swap read or write)."""
        return sum(self.errors.values())

    @property
    def mismatches(self) -> int:
        """Pages that came back with other bytes than written (-1: no result line)."""
        return int(self.result.get("mismatches", -1))

    @property
    def verified(self) -> int:
        """Page checks the workload made."""
        return int(self.result.get("verified", 0))

    @property
    def sigbus(self) -> bool:
        """The workload died of SIGBUS (the kernel could not swap a page back in)."""
        return self.exit_status == SIGBUS_STATUS

    @property
    def workload_seconds(self) -> float:
        """Seconds the workload ran, by its own clock (the sum of its passes)."""
        return float(self.result.get("seconds", sum(p.seconds for p in self.passes)))

    def tail(self, n: int = 40) -> str:
        """The console's last lines, for an assertion message."""
        return "\n".join(self.lines[-n:])

    def summary(self) -> str:
        """One line for a log or a test failure."""
        return (
            f"accel={self.accel} finished={self.finished} timed_out={self.timed_out} "
            f"panicked={self.panicked} "
            f"exit={self.exit_status} verified={self.verified} mismatches={self.mismatches} "
            f"io_errors={self.errors} notes={self.notes} vmstat={self.vmstat} "
            f"passes={[(p.kind, p.seconds) for p in self.passes]} wall={self.wall_seconds:.0f}s"
        )


PASS_LINE = re.compile(r"^PASS (\d+) (\w+) ([\d.]+) s ([\d.]+) MiB/s")
KEY_VALUE = re.compile(r"(\w+)=(-?[\d.]+)")


def feed(run: GuestRun, line: str) -> None:
    """Take one console line into `run`."""
    run.lines.append(line)
    if line.startswith("RK BOOTED"):
        run.booted = True
    elif line.startswith("RK DONE"):
        run.finished = True
    elif "Kernel panic - not syncing" in line:
        run.panicked = True
    elif line.startswith("RK NBD-CLIENT "):
        run.nbd_client = line[len("RK NBD-CLIENT ") :]
    elif line.startswith("RK SWAPON"):
        run.swapon_ok = "rc=0" in line
    elif line.startswith("RK WORKLOAD-EXIT"):
        m = re.search(r"status=(\d+)", line)
        run.exit_status = int(m.group(1)) if m else None
    elif line.startswith("RK VMSTAT"):
        run.vmstat = {k: int(float(v)) for k, v in KEY_VALUE.findall(line)}
    elif line.startswith("RK ZRAM-MM "):
        run.zram_mm = [int(f) for f in line.split()[2:] if f.isdigit()]
    elif line.startswith("RK DMESG "):
        text = line[len("RK DMESG ") :]
        run.dmesg.append(text)
        for kind, pattern in ERROR_PATTERNS.items():
            if pattern.search(text):
                run.errors[kind] = run.errors.get(kind, 0) + 1
        for kind, pattern in NOTE_PATTERNS.items():
            if pattern.search(text):
                run.notes[kind] = run.notes.get(kind, 0) + 1
    elif line.startswith("RESULT "):
        run.result = {k: float(v) for k, v in KEY_VALUE.findall(line)}
    elif line.startswith("MISMATCH"):
        run.mismatch_lines.append(line)
    else:
        m = PASS_LINE.match(line)
        if m:
            run.passes.append(
                PassTime(int(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4)))
            )


def parse(lines: list[str], accel: str = "tcg") -> GuestRun:
    """A whole console at once."""
    run = GuestRun(accel=accel)
    for line in lines:
        feed(run, line)
    return run
