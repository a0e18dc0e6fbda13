"""A running node: the composition root (`Node`), its configuration, its RPC handlers and the
process entry point (`node.run`)."""

from ramster.node.config import NodeConfig, load_config
from ramster.node.node import Node

__all__ = ["Node", "NodeConfig", "load_config"]
