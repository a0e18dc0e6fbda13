"""What a holder knows of exports' terms, and the copies owners ordered: two bounded tables the
lent pool consults before it changes anything. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ramster.pagestore.codec import checksum as page_checksum
from ramster.pagestore.codec import expand
from ramster.pagestore.owners import (
    MAX_EXPORT_TERM,
    MAX_EXPORTS,
    MAX_TERM_JUMP,
    TERM_SHIFT,
    ExportClaim,
    Fenced,
    TooManyExports,
)
from ramster.pagestore.pool import PagePool

MAX_OLD_TERMS = 65536
"""Exports whose last term a holder remembers after their claim went (older servers stay
fenced): a small int each, so far more than MAX_EXPORTS."""
MAX_EXPECTED = 1 << 18
"""Copies ordered by owners and not yet arrived that a holder remembers (oldest go first)."""
MAX_CALL_MARKS = 1 << 16
"""Keys whose latest drop, and whose latest put, a holder remembers by the owner's call
sequence, against calls that arrive after later ones (oldest go first)."""


class ExportTerms:
    """The newest claim of each export (term, server, size) and the terms of deleted ones."""

    def __init__(self) -> None:
        self.claims: dict[str, ExportClaim] = {}
        self._old: dict[str, ExportClaim] = {}  # owner -> its claim, once evicted from claims
        self._deleted: dict[str, int] = {}  # owner -> the term it was deleted under
        self.fenced = 0

    def known_term(self, owner: str) -> int:
        """The newest term this holder has seen for the export (0: none)."""
        claim = self.claims.get(owner) or self._old.get(owner)
        return claim.term if claim is not None else 0

    def last_claim(self, owner: str) -> ExportClaim:
        """The newest claim this holder knows of the export, evicted or not (term 0: none)."""
        return self.claims.get(owner) or self._old.get(owner) or ExportClaim(0, "", 0)

    def check(self, owner: str, term: int, node: str, idle: Callable[[], list[str]]) -> bool:
        """Admit a call of `term` by `node` (Fenced if older, the same term from another node,
        past the ceiling, or far above the term known); True when it raised the export's term.
        `idle()` lists exports without pages here, longest silent first: their claims may go
        to make room for a new one."""
        claim = self.claims.get(owner) or self._old.get(owner)
        newest = self.known_term(owner)
        if (
            term < newest
            or (claim is not None and term == claim.term and node != claim.node)
            or term > MAX_EXPORT_TERM
            or (newest and term > newest + MAX_TERM_JUMP)
        ):
            self.fenced += 1
            raise Fenced(owner, claim or ExportClaim(newest, "", 0))
        if owner in self.claims and claim is not None and term == claim.term:
            return False
        if owner not in self.claims and len(self.claims) >= MAX_EXPORTS:
            self._evict(idle)
        self.claims[owner] = ExportClaim(term, node, claim.size if claim else 0)
        raised = self._old.pop(owner, None) is None or term > (claim.term if claim else 0)
        return raised

    def _evict(self, idle: Callable[[], list[str]]) -> None:
        gone = next(iter(idle()), None)
        if gone is None:
            raise TooManyExports(f"this holder keeps {MAX_EXPORTS} exports already")
        self._old[gone] = self.claims.pop(gone)
        while len(self._old) > MAX_OLD_TERMS:
            self._old.pop(next(iter(self._old)))

    def resize(self, owner: str, size: int) -> ExportClaim:
        """Record the export's size under its current claim."""
        claim = self.claims[owner]
        if size and claim.size != size:
            claim = self.claims[owner] = ExportClaim(claim.term, claim.node, size)
        return claim

    def delete(self, owner: str, term: int) -> None:
        """The export was deleted under `term`: every copy of an older term is gone for good."""
        self._deleted[owner] = max(term, self._deleted.get(owner, 0))
        while len(self._deleted) > MAX_OLD_TERMS:
            self._deleted.pop(next(iter(self._deleted)))

    def deleted_term(self, owner: str) -> int:
        """The term the export was last deleted under (0: never)."""
        return self._deleted.get(owner, 0)

    def version_floor(self, owner: str) -> int:
        """Versions at or below this are of a deleted life of the export (-1: none)."""
        term = self._deleted.get(owner)
        return -1 if term is None else ((term + 1) << TERM_SHIFT) - 1


class CopyOrders:
    """Copies an owner ordered onto this holder (hold.expect): a copy forwarded by another
    holder is kept only if it matches one, exactly, and consumes it."""

    def __init__(self) -> None:
        self._expected: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._seqs: dict[tuple[str, str, int, int], int] = {}
        self.taken: dict[tuple[int, int], int] = {}
        """(area, offset) -> the owner's call sequence of each order the last `take` consumed
        (orders sent with one): the copy counts as a put of that call (`CallMarks`)."""

    def __len__(self) -> int:
        return len(self._expected)

    def expect(
        self,
        owner: str,
        keyed: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        checksums: Sequence[int],
        seq: int | None = None,
    ) -> None:
        """Note copies the owner will have sent here (the newest order for a key wins), with
        the owner's call sequence of the order if it sent one."""
        table = self._expected
        seqs = self._seqs
        for area, offset, version, checksum in zip(
            areas, offsets, versions, checksums, strict=True
        ):
            key = (owner, keyed, area, offset)
            table.pop(key, None)
            table[key] = (version, checksum)
            if seq is None:
                seqs.pop(key, None)
            else:
                seqs[key] = seq
        while len(table) > MAX_EXPECTED:
            seqs.pop(table_key := next(iter(table)), None)
            table.pop(table_key)

    def take(
        self,
        owner: str,
        keyed: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        checksums: Sequence[int],
    ) -> list[bool]:
        """Which copies were ordered exactly so (those orders are consumed; `taken` says with
        which call sequences)."""
        out = []
        table = self._expected
        seqs = self._seqs
        self.taken = {}
        for area, offset, version, checksum in zip(
            areas, offsets, versions, checksums, strict=True
        ):
            key = (owner, keyed, area, offset)
            ordered = table.get(key) == (version, checksum)
            if ordered:
                del table[key]
                seq = seqs.pop(key, None)
                if seq is not None:
                    self.taken[(area, offset)] = seq
            out.append(ordered)
        return out

    def withdraw(
        self,
        owner: str,
        keyed: str,
        areas: Sequence[int],
        offsets: Sequence[int],
        versions: Sequence[int],
        *,
        inclusive: bool,
    ) -> None:
        """Forget orders of these keys below each version (at or below it, `inclusive`): the
        owner dropped them or stored newer ones; a copy still on its way is a stray now."""
        table = self._expected
        if not table:
            return
        for area, offset, version in zip(areas, offsets, versions, strict=True):
            key = (owner, keyed, area, offset)
            order = table.get(key)
            if order is not None and (order[0] < version or (inclusive and order[0] == version)):
                del table[key]
                self._seqs.pop(key, None)

    def forget(self, owner: str) -> None:
        """Drop every order of an owner (its pages here are gone)."""
        for key in [k for k in self._expected if k[0] == owner]:
            del self._expected[key]
            self._seqs.pop(key, None)


class CallMarks:
    """The owner's puts and drops of keys, by the owner's call sequence, so that a call that
    runs here after a later one (a slow or reordered call, or one its caller timed out on and
    sent again) does not undo it:
    - a put sent before a drop that names its key at its version or above is a stray the owner
      no longer references: refused (a put sent after the drop, the same version again when a
      spill or repair is retried, is kept);
    - a drop sent before a put that kept the key since does not take that copy.

    Sequence numbers are the owner's (one counter per owner process, rising with every call),
    compared only within one owner incarnation exactly as the calls name it. Both tables are
    bounded (oldest go first, whoever's marks push them out); a mark that goes leaves its
    owner incarnation's floor behind, and a call it may have been about errs on the safe side:
    a put sent before an evicted drop is refused (the owner's retry, a later call, is kept),
    a drop sent before an evicted put leaves the copy (a stray, never a loss)."""

    def __init__(self) -> None:
        self._drops: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._puts: dict[tuple[str, str, int, int], int] = {}
        self._drop_floor: dict[tuple[str, str], int] = {}
        self._put_floor: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._drops) + len(self._puts)

    def dropped(
        self,
        owner: str,
        inc: str,
        area: int,
        offsets: Sequence[int],
        versions: Sequence[int],
        seq: int,
    ) -> list[bool]:
        """Note the owner's drop of these keys (no newer than the versions), sent as call `seq`;
        per key, whether it may take the copy held (False: a put sent after it kept the key).
        Two drops of a key merge into the higher version and sequence: the owner never puts a
        version older than one it dropped, so that refuses no put it still wants."""
        table = self._drops
        puts = self._puts
        put_floor = self._put_floor.get((owner, inc), 0)
        out = []
        for offset, version in zip(offsets, versions, strict=True):
            key = (owner, inc, area, offset)
            old = table.pop(key, None)
            table[key] = (version, seq) if old is None else (max(version, old[0]), max(seq, old[1]))
            out.append(puts.get(key, put_floor) < seq)
        while len(table) > MAX_CALL_MARKS:
            gone = next(iter(table))
            _raise(self._drop_floor, gone[:2], table.pop(gone)[1])
        return out

    def put(
        self,
        owner: str,
        inc: str,
        area: int,
        offsets: Sequence[int],
        versions: Sequence[int],
        seq: int,
    ) -> list[bool]:
        """Per key of a put sent as call `seq`, whether it may be kept (False: a drop sent after
        it reached its version)."""
        table = self._drops
        floor = self._drop_floor.get((owner, inc), 0)
        if not table and not floor:
            return [True] * len(offsets)
        out = []
        for offset, version in zip(offsets, versions, strict=True):
            mark = table.get((owner, inc, area, offset))
            if mark is None:
                out.append(seq > floor)
            else:
                out.append(version > mark[0] or seq > mark[1])
        return out

    def kept(self, owner: str, inc: str, area: int, offsets: Sequence[int], seq: int) -> None:
        """The keys a put sent as call `seq` kept here."""
        table = self._puts
        for offset in offsets:
            key = (owner, inc, area, offset)
            table[key] = max(seq, table.pop(key, 0))
        while len(table) > MAX_CALL_MARKS:
            gone = next(iter(table))
            _raise(self._put_floor, gone[:2], table.pop(gone))

    def forget(self, owner: str) -> None:
        """Drop every mark of an owner (its pages here are gone)."""
        for table in (self._drops, self._puts):
            for key in [k for k in table if k[0] == owner]:
                del table[key]
        for floors in (self._drop_floor, self._put_floor):
            for pair in [k for k in floors if k[0] == owner]:
                del floors[pair]


def _raise(floors: dict[tuple[str, str], int], owner: tuple[str, str], seq: int) -> None:
    """Raise an owner incarnation's floor to seq (the floors are bounded too: oldest go first,
    and an owner incarnation that many others pushed out is long silent)."""
    floors[owner] = max(seq, floors.pop(owner, 0))
    while len(floors) > MAX_CALL_MARKS:
        floors.pop(next(iter(floors)))


def newest_wins(
    pool: PagePool,
    ident: int,
    floor: int,
    idx: list[int],
    offsets: Sequence[int],
    versions: Sequence[int],
    checksums: Sequence[int],
    ok: list[bool],
) -> tuple[list[int], int]:
    """Newest wins: (the indices of a put that may replace what is held, how many were refused).
    The same copy again is kept as it is (ok); an older version, the same one with other bytes,
    or one an area drop or a deletion reached (at or below `floor`, -1: none) is refused."""
    held = pool.versions(ident, [offsets[i] for i in idx])
    if floor < 0 and held.count(None) == len(held):
        return idx, 0  # nothing held, nothing dropped: the usual case, decided in one pass
    sums: list[int | None] = [None] * len(idx)
    if held.count(None) != len(held):
        keys = [offsets[i] for i, h in zip(idx, held, strict=True) if h is not None]
        found = iter(pool.checksums(ident, keys))
        sums = [next(found) if h is not None else None for h in held]
    take = []
    refused = 0
    same = [
        i
        for i, have, s in zip(idx, held, sums, strict=True)
        if have == versions[i] and s == checksums[i]
    ]
    # The same copy again is kept as it is only if the held bytes still match it: a damaged
    # copy (or an orphan that rotted) is replaced, never counted as the owner's replica.
    ps = pool.config.page_size
    stored = pool.get_stored_many(ident, [offsets[i] for i in same]) if same else []
    sound = {
        i
        for i, item in zip(same, stored, strict=True)
        if item is not None and page_checksum(expand(item[2], ps)) == checksums[i]
    }
    for i, have, have_sum in zip(idx, held, sums, strict=True):
        version = versions[i]
        if version <= floor:
            refused += 1
            continue
        if have is not None and have > floor:
            if have > version or (have == version and have_sum != checksums[i]):
                refused += 1
                continue
            if have == version and i in sound:
                ok[i] = True  # a duplicate: the held copy is this one
                continue
        take.append(i)
    return take, refused
