"""The frontswap contract and its implementations."""

from ramster.frontswap.contract import Frontswap, PageLike
from ramster.frontswap.local import FrontswapStatistics, LocalFrontswap

__all__ = ["Frontswap", "FrontswapStatistics", "LocalFrontswap", "PageLike"]
