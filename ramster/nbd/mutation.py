"""How a batch of WRITE, ZERO and TRIM operations becomes the final content of whole pages, as
pure logic: the export loads what it needs, stores and invalidates what this computes."""

from __future__ import annotations

from collections.abc import Sequence

from ramster.nbd import const

WRITE, ZERO, TRIM = 0, 1, 2
Mutation = tuple[int, int, bytes | int]
"""(WRITE, offset, data), or (ZERO or TRIM, offset, length)."""
Span = tuple[int, int, bytes | None]
"""(offset, length, data) of one operation; data None means zeros."""


def spans(ops: Sequence[Mutation], ps: int) -> list[Span]:
    """The span of each operation. A TRIM covers the whole pages inside its range only: partial
    pages keep their bytes (the spec allows either)."""
    out: list[Span] = []
    for kind, offset, arg in ops:
        if isinstance(arg, bytes):
            out.append((offset, len(arg), arg))
        elif kind == ZERO:
            out.append((offset, arg, None))
        else:
            first = -(-offset // ps) * ps
            out.append((first, max((offset + arg) // ps * ps - first, 0), None))
    return out


def aligned(batch: Sequence[Span], ps: int) -> bool:
    """Every span covers whole pages only."""
    return all(not (offset % ps or length % ps) for offset, length, _ in batch)


def partial_pages(batch: Sequence[Span], ps: int) -> list[int]:
    """The pages written only in part, whose stored content is needed, in order. Also those an
    earlier operation of the batch produces: that one may be skipped (a page it writes in part
    failed to load), and then this one merges into the stored bytes, not into zeros."""
    need: dict[int, None] = {}
    for offset, length, _ in batch:
        if length:
            need.update(dict.fromkeys(_edges(offset, length, ps)))
    return list(need)


def final_pages(
    batch: Sequence[Span], old: dict[int, bytes], bad: set[int], whole: bool, ps: int
) -> tuple[dict[int, bytes], list[int], int]:
    """The final content of every page touched, in operation order (the last one wins); the
    operations skipped because a page they write in part failed to load; how many pages were
    merged with their old content (read-modify-writes)."""
    zero = bytes(ps)
    final: dict[int, bytes] = {}
    skipped: list[int] = []
    merges = 0
    for i, (offset, length, data) in enumerate(batch):
        if not length:
            continue
        if bad and any(p in bad and p not in final for p in _edges(offset, length, ps)):
            # A page it writes in part failed to load, and no operation before it in the
            # batch produced that page: its bytes around the write are unknown.
            skipped.append(i)
            continue
        if whole and data is not None and length == ps:
            final[offset // ps] = data
            continue
        pos = 0
        while pos < length:
            page, inside = divmod(offset + pos, ps)
            take = min(ps - inside, length - pos)
            if take == ps:
                content = zero if data is None else data[pos : pos + ps]
            else:
                base = final[page] if page in final else old.get(page, zero)
                merged = bytearray(base)
                merged[inside : inside + take] = (
                    bytes(take) if data is None else data[pos : pos + take]
                )
                content = bytes(merged)
                merges += 1
            final[page] = content
            pos += take
    return final, skipped, merges


def _edges(offset: int, length: int, ps: int) -> list[int]:
    """The pages a span writes only in part (its first and last, when not whole)."""
    end = offset + length
    return ([offset // ps] if offset % ps else []) + ([(end - 1) // ps] if end % ps else [])


def errors_of(
    batch: Sequence[Span], skipped: Sequence[int], failed: dict[int, int], ps: int
) -> list[int]:
    """An error per operation: EIO for the skipped ones, else the error of the first page it
    touches that failed (0 if none)."""
    errors = [0] * len(batch)
    for i in skipped:
        errors[i] = const.EIO
    if failed:
        for i, (offset, length, _) in enumerate(batch):
            if length and not errors[i]:
                first, last = offset // ps, (offset + length - 1) // ps
                errors[i] = next((failed[p] for p in range(first, last + 1) if p in failed), 0)
    return errors
