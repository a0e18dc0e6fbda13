"""The counters of one NBD export, as the server, the node's stats and /metrics show them."""

from __future__ import annotations

from dataclasses import dataclass

from ramster.nbd.config import LOCAL


@dataclass(frozen=True, slots=True)
class ExportStatistics:
    """Counters of one export."""

    name: str
    area: int
    size: int
    pages_mapped: int
    """Pages that may hold data (written and not since invalidated)."""
    pages_stored: int
    zero_pages: int
    """Pages written as zeros: invalidated instead of stored."""
    read_modify_writes: int
    pages_refused: int
    """Stores the pool and the cluster could not take (their requests got ENOSPC)."""
    pages_discarded: int
    read_errors: int
    pages_held: int
    """Pages kept by the export itself until the pool takes them back (see HELD_PAGES)."""
    restore_failures: int
    """Refused sub-page writes whose page could be neither put back nor held: bytes outside the
    failed request were lost (a swap client never writes less than a page)."""
    durability: str = LOCAL
    pages_lost: int = 0
    """Written blocks with no copy left anywhere (found by a rebuild): they read as EIO."""
    fenced: str | None = None
    """Why this server no longer serves the export (another one took it over)."""
    manifest_failures: int = 0
    """Batches whose manifest pages could not be stored (their writes got EIO)."""
