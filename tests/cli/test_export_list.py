"""`ramster export list`'s table: each export's size against what the cluster can hold for it."""

from __future__ import annotations

from typing import Any

from ramster.cli.admin import exports_table

MiB = 1 << 20


def _served(name: str, size: int, capacity: int) -> dict[str, Any]:
    return {
        "name": name,
        "term": 1,
        "durability": "replicated",
        "state": "serving",
        "size": size,
        "replicas": 2,
        "capacity_bytes": capacity,
        "fits": size <= capacity,
        "pages": 0,
        "under_replicated": 0,
        "pages_lost": 0,
    }


def test_an_export_that_cannot_fit_is_marked_and_explained() -> None:
    view = {
        "served": [_served("big", 512 * MiB, 32 * MiB), _served("small", 16 * MiB, 32 * MiB)],
        "held": [{"name": "other", "server": "n2", "term": 3, "pages_here": 7}],
        "servers": {
            "big": {"server": "n0", "term": 1},
            "small": {"server": "n0", "term": 1},
            "other": {"server": "n2", "term": 3},
        },
    }
    lines = exports_table(view).splitlines()
    assert lines[0].split()[5:7] == ["SIZE", "CAPACITY"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert "512.0 MiB" in rows["big"] and "32.0 MiB !" in rows["big"]
    assert "16.0 MiB" in rows["small"] and "32.0 MiB" in rows["small"]
    assert "!" not in rows["small"]
    # Served elsewhere (the heartbeats say so): its size and capacity are its server's to tell.
    assert rows["other"].split()[3:7] == ["-", "serving", "-", "-"]
    (note,) = lines[4:]
    assert note.startswith("! big: 512.0 MiB does not fit in the 32.0 MiB")
    assert "R=2" in note and "ENOSPC" in note


def test_no_exports() -> None:
    assert exports_table({"served": [], "held": [], "servers": {}}) == "no exports"
