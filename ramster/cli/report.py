"""Plain-text tables, sizes and progress lines for terminals (CLI, demo, benchmarks)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned first column, right-aligned others."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


class Progress:
    """A one-line progress bar on a terminal; one summary line otherwise."""

    def __init__(self, label: str, total: int, unit: str = "", out: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.out = out or sys.stderr
        self.done = 0
        self._tty = self.out.isatty()
        self._start = time.monotonic()
        self._last = 0.0
        self._timed: float | None = None

    def advance(self, n: int, seconds: float | None = None) -> None:
        """Count n more units done; given seconds, the rate is over the sum of those (the
        timed work alone) instead of the wall clock since the start."""
        self.done += n
        if seconds is not None:
            self._timed = (self._timed or 0.0) + seconds
        now = time.monotonic()
        pct = 100 * self.done // self.total
        if self._tty and now - self._last >= 0.1:
            self._last = now
            bar = "#" * (pct // 4)
            self.out.write(f"\r{self.label:<10} [{bar:<25}] {pct:3d}% {self._rate(now)}")
            self.out.flush()

    def _rate(self, now: float) -> str:
        elapsed = max(now - self._start if self._timed is None else self._timed, 1e-9)
        return f"{self.done / elapsed:,.0f} {self.unit}/s".strip()

    def close(self) -> None:
        """Finish the line."""
        now = time.monotonic()
        if self._tty:
            self.out.write(f"\r{self.label:<10} [{'#' * 25}] 100% {self._rate(now)}\n")
        else:
            self.out.write(f"{self.label}: 100% {self._rate(now)}\n")
        self.out.flush()
