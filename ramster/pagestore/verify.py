"""Checking a held copy against what its owner knows of the page."""

from __future__ import annotations

from collections.abc import Sequence

from ramster.pagestore.codec import checksum, expand
from ramster.pagestore.lent import Stored


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


def copyable(
    held: Sequence[Stored | None], versions: Sequence[int], checksums: Sequence[int], page_size: int
) -> tuple[list[int], list[bytes]]:
    """The good copies (see `verified`) and their payloads, copied out of the pool: a drop
    while they are on their way to another holder may reuse that memory."""
    good = verified(held, versions, checksums, page_size)
    return good, [bytes(item[2]) for i in good if (item := held[i]) is not None]


def spread(
    n: int, good: Sequence[int], kept: Sequence[bool], payloads: Sequence[bytes]
) -> tuple[list[bool], int]:
    """Per-key flags from what the target kept of the good copies, and the bytes it kept."""
    flags = [False] * n
    for i, flag in zip(good, kept, strict=True):
        flags[i] = flag
    return flags, sum(len(p) for p, k in zip(payloads, kept, strict=True) if k)
