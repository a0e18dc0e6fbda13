"""Validated, frozen configuration of a page pool."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536
MAX_OFFSET = (1 << 32) - 1
"""Offsets are page indices kept in 32 bits: 16 TiB per area at 4 KiB pages."""
MAX_AREA = (1 << 16) - 1


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How big pages are and how much RAM the pool may use."""

    page_size: int = 4096
    """Bytes per page: a power of two from 512 to 65536."""
    budget_bytes: int = 256 << 20
    """Ceiling on what the pool really costs in RAM: blobs, slab waste, metadata, index."""
    accept_threshold_percent: int = 90
    """Once the budget is hit, stores are refused until usage falls below this share of it."""
    compress_threshold: float = 7 / 8
    """A page whose lz4 form is larger than this share of a page is kept raw."""
    keep_incompressible: bool = True
    """Keep pages that do not compress (raw); when False they are refused (reject_compress_poor)."""

    def __post_init__(self) -> None:
        ps = self.page_size
        if ps < MIN_PAGE_SIZE or ps > MAX_PAGE_SIZE or ps & (ps - 1):
            raise ValueError(
                f"page_size must be a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}, "
                f"got {ps!r}"
            )
        if self.budget_bytes < 0:
            raise ValueError(
                f"budget_bytes must be a non-negative integer, got {self.budget_bytes!r}"
            )
        if not 0 <= self.accept_threshold_percent <= 100:
            raise ValueError(
                "accept_threshold_percent must be within 0..100, "
                f"got {self.accept_threshold_percent!r}"
            )
        if not 0 < self.compress_threshold < 1:
            # Below 1 so that an lz4 payload is never a whole page long (see stored_kind).
            raise ValueError(
                f"compress_threshold must be within (0, 1), got {self.compress_threshold!r}"
            )

    @property
    def compress_limit(self) -> int:
        """Largest lz4 form, in bytes, that is kept compressed (never a whole page)."""
        return min(int(self.page_size * self.compress_threshold), self.page_size - 1)

    @property
    def accept_bytes(self) -> int:
        """Usage below which a full pool accepts stores again."""
        return self.budget_bytes * self.accept_threshold_percent // 100
