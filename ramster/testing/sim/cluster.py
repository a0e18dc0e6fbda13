"""Whole real nodes (`ramster.node.Node`) as simulated processes on one SimNetwork."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import KeyKind, RpcConfig, Secret
from ramster.testing.sim.loop import Proc, SimLoop
from ramster.testing.sim.network import SimNetwork

T = TypeVar("T")
SECRET = Secret(b"sim-secret-0123456789abcdef01234", KeyKind.CLUSTER)
PORT = 7070


@dataclass(frozen=True, slots=True)
class SimNodeConfig(NodeConfig):
    """A NodeConfig whose RPC allows fewer calls in flight (so that slots run out)."""

    max_in_flight: int = 8
    call_timeout: float = 2.0

    def rpc_config(self) -> RpcConfig:
        """The node's RPC settings with the simulation's limits."""
        return dataclasses.replace(
            NodeConfig.rpc_config(self),
            max_in_flight=self.max_in_flight,
            call_timeout=self.call_timeout,
        )


@dataclass
class SimNode:
    """One node slot: its configuration and state dir survive its runs."""

    index: int
    config: SimNodeConfig
    proc: Proc | None = None
    node: Node | None = None
    runs: int = 0

    @property
    def name(self) -> str:
        """Its node id."""
        return f"n{self.index}"

    @property
    def up(self) -> bool:
        """Running (maybe paused)."""
        return self.proc is not None and not self.proc.dead

    @property
    def serving(self) -> bool:
        """Running and not paused."""
        return self.up and self.proc is not None and not self.proc.paused


def host_of(index: int) -> str:
    """The simulated address of node `index`."""
    return f"10.0.0.{index + 1}"


class SimCluster:
    """n nodes of the real composition, each its own process on the simulated network."""

    def __init__(self, loop: SimLoop, net: SimNetwork, n: int, root: Path, **settings: Any) -> None:
        self.loop = loop
        self.net = net
        self.nodes = []
        for i in range(n):
            config = SimNodeConfig(
                node_id=f"n{i}",
                listen=f"{host_of(i)}:{PORT}",
                peers=tuple(f"{host_of(j)}:{PORT}" for j in range(n) if j != i),
                state_dir=root / f"n{i}",
                admin_listen=None,
                **settings,
            )
            self.nodes.append(SimNode(i, config))

    def spawn(self, node: SimNode, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run coro as a task of node's current process."""
        assert node.proc is not None
        return self.loop.create_task(coro, context=node.proc.fork())

    async def start(self, node: SimNode) -> None:
        """Start a new run of node (a new incarnation, the same state dir)."""
        node.runs += 1
        node.proc = proc = Proc(node.name, node.runs)
        made = await self.loop.create_task(_make(node.config), context=proc.fork())
        node.node = made
        await self.loop.create_task(made.start(), context=proc.fork())

    def slow_holder(self, node: SimNode, delay: Callable[[], float]) -> None:
        """Make node's holder calls (hold.*) wait delay() seconds before they run: a holder
        that answers its heartbeats at once and its page calls late."""
        assert node.node is not None
        methods = node.node.server._methods
        for name, method in list(methods.items()):
            if name.startswith("hold."):
                methods[name] = dataclasses.replace(
                    method, handler=_slowed(method.handler, method.is_async, delay), is_async=True
                )

    def crash(self, node: SimNode) -> None:
        """kill -9: nothing of this run runs again; its memory is gone; its peers see resets."""
        assert node.proc is not None and node.node is not None
        node.proc.dead = True
        node.proc.held.clear()
        self.net.crash(node.proc)
        lock = node.node._run_lock
        if lock is not None:
            os.close(lock)  # the kernel releases a dead process's flock
            node.node._run_lock = None

    def pause(self, node: SimNode) -> None:
        """SIGSTOP: the node keeps its memory, runs nothing, its timers wait."""
        assert node.proc is not None
        node.proc.paused = True

    def resume(self, node: SimNode) -> None:
        """SIGCONT."""
        assert node.proc is not None
        self.loop.resume(node.proc)


def _slowed(
    handler: Callable[[Any], Any], is_async: bool, delay: Callable[[], float]
) -> Callable[[Any], Any]:
    async def slowed(params: Any) -> Any:
        wait = delay()
        if wait:
            await asyncio.sleep(wait)
        result = handler(params)
        return (await result) if is_async else result

    return slowed


async def _make(config: NodeConfig) -> Node:
    return Node(config, SECRET)
