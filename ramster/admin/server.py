"""The admin API's server: an aiohttp AppRunner/TCPSite embedded in the node, plus the event
loop lag probe it reports in /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time

from aiohttp import web

from ramster.admin.app import make_app
from ramster.admin.source import NodeControl, NodeSource
from ramster.errors import ConfigError
from ramster.settings import parse_address
from ramster.telemetry.latency import Histogram

log = logging.getLogger(__name__)

LAG_PROBE = 0.25
"""Seconds between event loop lag probes."""
SHUTDOWN_TIMEOUT = 1.0
"""Seconds open requests (event streams) get at shutdown before they are cancelled."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(listen: str, token: str | None) -> tuple[str, int]:
    """host and port to bind; ConfigError for a non-loopback address without a token."""
    host, port = parse_address(listen)
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the admin API on {listen} without a token: anyone who can "
            "reach it could drain nodes. Give --admin-token-file (or RAMSTER_ADMIN_TOKEN), "
            "or bind a loopback address."
        )
    return host, port


class AdminServer:
    """Serves one node's admin API; `start()` returns once it listens."""

    def __init__(
        self,
        node: NodeSource,
        control: NodeControl,
        listen: str,
        token: str | None,
        *,
        read_token: bool | None = None,
    ) -> None:
        self.host, self._port = check_bind(listen, token)
        if read_token is None:
            read_token = not is_loopback(self.host)
        if read_token and token is None:
            raise ConfigError(
                "the admin API is to require its token for reads, but no token is configured "
                "(--admin-token-file or RAMSTER_ADMIN_TOKEN)"
            )
        self.read_token = read_token
        """Reads need the token too (default: when bound off loopback)."""
        self.loop_lag = Histogram()
        self.last_lag = [0.0]
        self._app = make_app(
            node, control, token, self.loop_lag, self.last_lag, read_token=read_token
        )
        # handler_cancellation: an event stream ends as soon as its reader goes away.
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            handler_cancellation=True,
        )
        self._probe: asyncio.Task[None] | None = None
        self._started = False

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def address(self) -> str:
        """host:port the admin API listens on."""
        return f"{self.host}:{self._port}"

    async def start(self) -> None:
        """Listen."""
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        addresses = self._runner.addresses  # the real port when 0 was asked for
        if addresses:
            self._port = int(addresses[0][1])
        self._probe = asyncio.create_task(self._measure_lag(), name="admin-loop-lag")
        log.info(
            "admin API on http://%s (reads %s)",
            self.address,
            "need the token" if self.read_token else "open, mutating calls need the token",
        )

    async def _measure_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE)
            lag = max(0.0, time.monotonic() - before - LAG_PROBE)
            self.last_lag[0] = lag
            self.loop_lag.observe(lag)

    async def close(self) -> None:
        """Stop listening and end open requests; idempotent."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._started:
            self._started = False
            await self._runner.cleanup()
