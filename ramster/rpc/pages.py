"""Page batches on the wire: parallel integer arrays plus one bin of concatenated payloads.

`[areas, offsets, versions, checksums, lengths, blob]` costs a few bytes per page beyond the
payload, decodes with one copy of the blob, and makes no Python object per page on the wire
path except the memoryview slices handed to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from ramster.errors import ProtocolError
from ramster.rpc.const import MAX_AREA, MAX_CHECKSUM, MAX_OFFSET, MAX_VERSION
from ramster.rpc.frames import Chunks
from ramster.types import Buffer


class Page(NamedTuple):
    """One page of a batch: key (area, offset), version, checksum, compressed payload."""

    area: int
    offset: int
    version: int
    checksum: int
    payload: Buffer


_INT_ONLY = {int}
_BOOL_ONLY = {bool}


def int_list(obj: object, name: str, maximum: int, count: int | None) -> list[int]:
    """obj as an array of ints within 0..maximum (of `count` items if given); ProtocolError."""
    if type(obj) is not list:
        raise ProtocolError(f"{name} must be an array of integers")
    if count is not None and len(obj) != count:
        raise ProtocolError(f"{name} has {len(obj)} items, expected {count}")
    if obj:
        # set(map(type, ...)) runs in C: no Python-level step per page.
        if set(map(type, obj)) != _INT_ONLY:
            raise ProtocolError(f"{name} must hold only integers")
        if min(obj) < 0 or max(obj) > maximum:
            raise ProtocolError(f"{name} holds a value outside 0..{maximum}")
    return obj


@dataclass(slots=True)
class Keys:
    """A batch of page keys (parallel arrays); wire form `[areas, offsets]`. Read-only."""

    areas: list[int]
    offsets: list[int]

    def __post_init__(self) -> None:
        if len(self.areas) != len(self.offsets):
            raise ValueError("areas and offsets must have the same length")

    @classmethod
    def of(cls, keys: Iterable[tuple[int, int]]) -> Keys:
        """Keys from (area, offset) pairs."""
        areas: list[int] = []
        offsets: list[int] = []
        for area, offset in keys:
            areas.append(area)
            offsets.append(offset)
        return cls(areas, offsets)

    def __len__(self) -> int:
        return len(self.areas)

    def take(self, idx: Sequence[int]) -> Keys:
        """The keys at these positions."""
        return Keys([self.areas[i] for i in idx], [self.offsets[i] for i in idx])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.areas, self.offsets, strict=True)

    def to_wire(self) -> list[object]:
        """The msgpack form."""
        return [self.areas, self.offsets]

    @classmethod
    def from_wire(cls, obj: object) -> Keys:
        """Check and convert the msgpack form; ProtocolError when it is off."""
        if type(obj) is not list or len(obj) != 2:
            raise ProtocolError("keys must be [areas, offsets]")
        areas = int_list(obj[0], "areas", MAX_AREA, None)
        keys = object.__new__(cls)  # columns already checked: skip __post_init__
        keys.areas = areas
        keys.offsets = int_list(obj[1], "offsets", MAX_OFFSET, len(areas))
        return keys


@dataclass(slots=True)
class PageBatch:
    """Pages as parallel arrays; payloads are bytes or memoryviews into one received blob.

    Read-only by convention (not frozen: batches are built on the hot path)."""

    areas: list[int]
    offsets: list[int]
    versions: list[int]
    checksums: list[int]
    payloads: Sequence[Buffer]

    def __post_init__(self) -> None:
        n = len(self.areas)
        if not (
            len(self.offsets)
            == len(self.versions)
            == len(self.checksums)
            == len(self.payloads)
            == n
        ):
            raise ValueError("every column of a page batch must have the same length")

    @classmethod
    def of(cls, pages: Iterable[tuple[int, int, int, int, Buffer]]) -> PageBatch:
        """A batch from (area, offset, version, checksum, payload) tuples."""
        areas: list[int] = []
        offsets: list[int] = []
        versions: list[int] = []
        checksums: list[int] = []
        payloads: list[Buffer] = []
        for area, offset, version, checksum, payload in pages:
            areas.append(area)
            offsets.append(offset)
            versions.append(version)
            checksums.append(checksum)
            payloads.append(payload)
        return cls(areas, offsets, versions, checksums, payloads)

    @classmethod
    def with_keys(
        cls, keys: Keys, versions: list[int], checksums: list[int], payloads: Sequence[Buffer]
    ) -> PageBatch:
        """A batch of these keys' pages."""
        return cls(keys.areas, keys.offsets, versions, checksums, payloads)

    @classmethod
    def empty(cls) -> PageBatch:
        """A batch of no pages."""
        return cls([], [], [], [], [])

    def __len__(self) -> int:
        return len(self.areas)

    def __iter__(self) -> Iterator[Page]:
        for i in range(len(self.areas)):
            yield Page(
                self.areas[i],
                self.offsets[i],
                self.versions[i],
                self.checksums[i],
                self.payloads[i],
            )

    @property
    def keys(self) -> Keys:
        """The keys of the pages, in order."""
        return Keys(self.areas, self.offsets)

    @property
    def payload_bytes(self) -> int:
        """Total bytes of payload."""
        return sum(len(p) for p in self.payloads)

    def to_wire(self) -> list[object]:
        """The msgpack form; the payloads are written as one bin without being joined."""
        lengths = [len(p) for p in self.payloads]
        return [
            self.areas,
            self.offsets,
            self.versions,
            self.checksums,
            lengths,
            Chunks(self.payloads),
        ]

    @classmethod
    def from_wire(cls, obj: object) -> PageBatch:
        """Check and convert the msgpack form; payloads become slices of the blob, not copies."""
        if type(obj) is not list or len(obj) != 6:
            raise ProtocolError(
                "a page batch must be [areas, offsets, versions, checksums, lengths, blob]"
            )
        blob = obj[5]
        if type(blob) is not bytes:
            raise ProtocolError("the page batch blob must be a bin")
        areas = int_list(obj[0], "areas", MAX_AREA, None)
        n = len(areas)
        offsets = int_list(obj[1], "offsets", MAX_OFFSET, n)
        versions = int_list(obj[2], "versions", MAX_VERSION, n)
        checksums = int_list(obj[3], "checksums", MAX_CHECKSUM, n)
        lengths = int_list(obj[4], "lengths", len(blob), n)
        if sum(lengths) != len(blob):
            raise ProtocolError("page lengths do not add up to the blob's size")
        view = memoryview(blob)
        ends = list(accumulate(lengths))
        payloads: list[Buffer] = list(map(view.__getitem__, map(slice, [0, *ends], ends)))
        batch = object.__new__(cls)  # columns already checked: skip __post_init__
        batch.areas = areas
        batch.offsets = offsets
        batch.versions = versions
        batch.checksums = checksums
        batch.payloads = payloads
        return batch


def flags_from_wire(obj: object, count: int) -> list[bool]:
    """Check a per-page answer: an array of `count` booleans."""
    if type(obj) is not list or len(obj) != count:
        raise ProtocolError(f"expected an array of {count} booleans")
    if obj and set(map(type, obj)) != _BOOL_ONLY:  # in C: no Python-level step per page
        raise ProtocolError("expected an array of booleans")
    return obj
