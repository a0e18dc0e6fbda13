"""`ramster node`: run one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from ramster.nbd import safety
from ramster.nbd.run import summary
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.rpc.loop import run

log = logging.getLogger(__name__)


async def serve(config: NodeConfig, secret: Secret) -> int:
    """Start a node (and its NBD exports), wait for a stop signal, shut it down gracefully;
    the exit code: 0 after a signal, 2 when the node had to stop itself, 1 on a bug."""
    nbd_config = config.nbd_config() if config.nbd is not None else None
    if nbd_config is not None and nbd_config.swap_safety:
        safety.protect()  # before the node's pools map anything (see safety.lock_memory)
    node = Node(config, secret)
    stop = asyncio.Event()
    code = 0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        waiter = asyncio.create_task(stop.wait())
        runner = asyncio.create_task(node.wait_closed())
        # A replicated export listens only once its server heard every node that may hold
        # its copies (that may take until a paused holder resumes): a stop signal still stops.
        starter = asyncio.create_task(_start_nbd(node))
        done, _ = await asyncio.wait({waiter, runner, starter}, return_when=asyncio.FIRST_COMPLETED)
        if starter in done and starter.exception() is None:
            done, _ = await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        elif starter in done:
            runner = starter
        for task in (waiter, runner, starter):
            task.cancel()
        await asyncio.gather(starter, return_exceptions=True)
        if runner in done and not stop.is_set():
            if node.fatal is not None:
                code = 2
                log.error("ramster node: %s; shutting down", node.fatal)
            else:
                code = 1
                exc = runner.exception()
                log.error(
                    "node background tasks ended unexpectedly; shutting down",
                    exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
                )
        else:
            log.info("stop signal received; shutting down")
    finally:
        if node.nbd is not None:
            await node.nbd.close()
            log.info("%s", summary(node.nbd.statistics()))
        await node.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


async def _start_nbd(node: Node) -> None:
    """Listen for NBD (the command line's exports ready), then resume the exports this node
    served when it stopped that its command line does not name."""
    for name in await node.start_nbd():
        log.info("export %s: this node served it when it stopped: resuming it", name)


def run_node(config: NodeConfig, secret: Secret) -> int:
    """Run until stopped; the exit code."""
    return run(serve(config, secret))
