"""One error tree for ramster, with stdlib-compatible bases so callers can catch what they know."""

from __future__ import annotations


class RamsterError(Exception):
    """Root of every error ramster raises on purpose."""

    retriable: bool = False
    """True when the same call may succeed if simply tried again later."""


class InvalidPage(RamsterError, ValueError):
    """A caller passed a malformed page, key or area; nothing was changed."""


class CorruptPage(RamsterError):
    """A stored copy failed its checksum or version check; it is never returned."""

    def __init__(self, message: str, *, area: int, offset: int) -> None:
        super().__init__(message)
        self.area = area
        self.offset = offset
