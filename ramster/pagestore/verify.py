"""Checking a held copy against what its owner knows of the page."""

from __future__ import annotations

from collections.abc import Sequence

from ramster.pagestore.lent import Stored
from ramster.pagestore.pool import checksum, expand


def verified(
    held: Sequence[Stored | None], versions: Sequence[int], checksums: Sequence[int], page_size: int
) -> list[int]:
    """Indexes of the held copies that are of the wanted version and expand to their checksum."""
    return [
        i
        for i, item in enumerate(held)
        if item is not None
        and item[0] == versions[i]
        and item[1] == checksums[i]
        and checksum(expand(item[2], page_size)) == checksums[i]
    ]
