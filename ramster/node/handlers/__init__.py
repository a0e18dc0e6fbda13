"""The node's RPC methods, split by role; each is given the narrow interface it needs."""

from ramster.node.handlers.control import Control, ControlService
from ramster.node.handlers.frontswap import FrontswapService, Served
from ramster.node.handlers.holder import HolderService

__all__ = ["Control", "ControlService", "FrontswapService", "HolderService", "Served"]
