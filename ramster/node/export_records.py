"""What a node remembers of the replicated exports it served, across its restarts.

One JSON file in the node's state directory (`exports.json`), replaced atomically (written
aside, fsynced, renamed) on every change. It is what makes "unknown is not empty" decidable
after a restart: the last term this node claimed (a restarted server never reuses a term, nor
therefore a version range: versions of term T start at T << TERM_SHIFT), whether the export was
ever created (its blank manifest stored: only an export never created may start blank), whether
this node served it when it stopped (it resumes those, wherever they came from) and the nodes
that may hold its copies (a node is added here, on disk, before it is given any copy: see
`ExportHolders.candidates`; a restarted server hears every one of them before it serves).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "exports.json"


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One export as this node last knew it."""

    name: str
    size: int
    term: int = 0
    """The newest term this node claimed (or saw claimed) for the export."""
    created: bool = False
    """The export exists: its manifest was stored once, or this node took it over from its
    server (it may never start blank again)."""
    serving: bool = False
    """This node is its server (serving it, or holding its term while it waits to hear every
    node it must before it serves): it resumes it on restart."""
    holders: tuple[str, ...] = ()
    """Every node that may hold copies of it (a superset, kept so by construction)."""

    def to_json(self) -> dict[str, Any]:
        """As plain data."""
        out = asdict(self)
        out["holders"] = list(self.holders)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRecord:
        """Parse one entry (ValueError if malformed)."""
        try:
            return cls(
                name=str(data["name"]),
                size=int(data["size"]),
                term=int(data["term"]),
                created=bool(data["created"]),
                serving=bool(data["serving"]),
                holders=tuple(sorted(str(h) for h in data["holders"])),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed export record: {exc}") from None


class ExportRecords:
    """The records of one node's state directory; every change is on disk when it returns."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        self._records: dict[str, ExportRecord] = {}
        try:
            raw = json.loads(self.path.read_text())
            records = [ExportRecord.from_json(entry) for entry in raw["exports"]]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable is not empty: refuse to start rather than forget terms and creations.
            raise RuntimeError(f"{self.path}: unreadable export records: {exc}") from None
        self._records = {r.name: r for r in records}

    def get(self, name: str) -> ExportRecord | None:
        """The record of an export, if this node ever served it."""
        return self._records.get(name)

    def all(self) -> list[ExportRecord]:
        """Every record, by name."""
        return [self._records[n] for n in sorted(self._records)]

    def update(self, name: str, size: int, **changes: Any) -> ExportRecord:
        """Change (or create) a record and write it through; the record now."""
        old = self._records.get(name) or ExportRecord(name, size)
        if "holders" in changes:
            changes["holders"] = tuple(sorted(set(changes["holders"])))
        new = replace(old, **changes)
        if size and new.size != size:
            new = replace(new, size=size)
        if new != old or name not in self._records:
            self._records[name] = new
            self._write()
        return new

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        body = json.dumps({"exports": [r.to_json() for r in self.all()]}, indent=1)
        with tmp.open("w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
