"""A node's export records survive its restart, are replaced atomically, and an unreadable file
stops the node rather than being read as "no exports"."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramster.node.export_records import ExportRecords


def test_records_survive_a_restart(tmp_path: Path) -> None:
    records = ExportRecords(tmp_path)
    records.update("swap0", 8 << 20, term=3, serving=True)
    records.update("swap0", 0, created=True, holders=frozenset({"n2", "n1"}))
    again = ExportRecords(tmp_path).get("swap0")
    assert again is not None
    assert (again.term, again.size, again.created, again.serving) == (3, 8 << 20, True, True)
    assert again.holders == ("n1", "n2")
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unreadable_record_file_is_not_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "exports.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable export records"):
        ExportRecords(tmp_path)
