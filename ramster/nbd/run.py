"""`ramster nbd`: NBD exports over a local compressed pool, in the foreground until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from ramster.frontswap.local import LocalFrontswap
from ramster.nbd import safety
from ramster.nbd.config import StandaloneConfig
from ramster.nbd.server import NbdServer, NbdStatistics, local_exports
from ramster.pagestore import PoolConfig
from ramster.rpc.loop import run

log = logging.getLogger(__name__)


def summary(stats: NbdStatistics) -> str:
    """One log line of a server's counters."""
    exports = " ".join(
        f"{e.name}[stored={e.pages_stored} mapped={e.pages_mapped} refused={e.pages_refused}]"
        for e in stats.exports.values()
    )
    errors = ",".join(f"{k}={v}" for k, v in sorted(stats.errors.items())) or "none"
    return (
        f"nbd statistics: connections={stats.connections_accepted} "
        f"refused={stats.connections_refused} busy={stats.connections_busy} "
        f"handshakes_failed={stats.handshakes_failed} protocol_errors={stats.protocol_errors} "
        f"internal_errors={stats.internal_errors} read={stats.bytes_read} "
        f"written={stats.bytes_written} errors={errors} {exports}"
    )


async def serve(settings: StandaloneConfig) -> None:
    """Serve until SIGINT or SIGTERM; SIGUSR1 logs the counters."""
    config = settings.nbd_config()
    local_budget = settings.local_budget
    if config.swap_safety:
        safety.protect()  # before the pool maps anything (see safety.lock_memory)
    frontswap = LocalFrontswap(PoolConfig(budget_bytes=local_budget))
    server = NbdServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.info("%s", summary(server.statistics())))
    try:
        await server.start(local_exports(frontswap, config))
        log.info("nbd: serving from a local pool of %d bytes", local_budget)
        await stop.wait()
        log.info("stop signal received; shutting down")
    finally:
        await server.close()
        log.info("%s", summary(server.statistics()))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)


def run_standalone(settings: StandaloneConfig) -> int:
    """Run until stopped; the exit code."""
    run(serve(settings))
    return 0
