"""The admin API as an aiohttp application: versioned JSON under /v1, /metrics, the dashboard.

Errors are JSON `{"error": {"code", "message"}}` with a stable code; nothing else leaks (an
unexpected exception is logged here and answered as `internal`). Mutating calls need the bearer
token; with `read_token` (the default off loopback) reads need it too, except /v1/health (with
no identity in it then) and the dashboard's own files. Event streams are bounded per client
address and in total.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from ramster.admin import views
from ramster.admin.metrics import registry_for, render
from ramster.admin.openapi import spec
from ramster.admin.source import NodeControl, NodeSource, UnknownNode
from ramster.errors import ExportPending, ExportTaken, RamsterError, RemoteError
from ramster.telemetry.events import TooManySubscribers
from ramster.telemetry.latency import Histogram

log = logging.getLogger(__name__)

NODE_KEY: web.AppKey[NodeSource] = web.AppKey("node")
CONTROL_KEY: web.AppKey[NodeControl] = web.AppKey("control")
TOKEN_KEY: web.AppKey[str | None] = web.AppKey("token")
READ_TOKEN_KEY: web.AppKey[bool] = web.AppKey("read_token")
STREAMS_KEY: web.AppKey[dict[str, int]] = web.AppKey("streams")
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry")
MAX_EVENTS_LIMIT = 1000
SSE_KEEPALIVE = 15.0
"""Seconds between comment lines on an idle event stream, so that proxies keep it open."""
STATIC = ("index.html", "dashboard.js", "dashboard.css")
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
MAX_STREAMS_PER_CLIENT = 4
"""Event streams one client address may hold open (the event log caps them all at 64)."""
OPEN_PATHS = frozenset({"/v1/health", "/"})
"""Reads that never need the token: liveness probes and the dashboard page itself."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer with an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    """The JSON body every error has."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "too-large",
    415: "unsupported-media-type",
}


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON with a stable code; tracebacks stay in the log."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http-error")
        response = error_response(exc.status, code, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error (see the node's log)")


def _node(request: web.Request) -> NodeSource:
    return request.app[NODE_KEY]


@web.middleware
async def read_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With read_token, every read but the open ones needs the token too."""
    if (
        request.app[READ_TOKEN_KEY]
        and request.method in ("GET", "HEAD")
        and request.path not in OPEN_PATHS
        and not request.path.startswith("/static/")
    ):
        require_token(request)
    return await handler(request)


def require_token(request: web.Request) -> None:
    """Refuse a call without the right bearer token (for the event stream, which browsers
    open without headers, `?token=` is accepted too)."""
    token = request.app[TOKEN_KEY]
    if token is None:
        raise ApiError(
            403,
            "no-token-configured",
            "this node has no admin token (--admin-token-file or RAMSTER_ADMIN_TOKEN): "
            "mutating calls are refused",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header and request.path == "/v1/events/stream":
        scheme, given = "bearer", request.query.get("token", "")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token")


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "bad-request", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad-request", f"{name} must be within {lo}..{hi}")
    return value


# -- reads -------------------------------------------------------------------------------------


async def get_health(request: web.Request) -> web.Response:
    """Liveness and readiness: 200 when ready, 503 while starting or stopping."""
    body = views.health(_node(request))
    if request.app[READ_TOKEN_KEY]:
        body = {k: body[k] for k in ("status", "live", "ready")}  # nothing about who we are
    return web.json_response(body, status=200 if body["ready"] else 503)


async def get_node(request: web.Request) -> web.Response:
    """This node."""
    return web.json_response(views.node_view(_node(request)))


async def get_cluster(request: web.Request) -> web.Response:
    """The cluster as this node sees it."""
    return web.json_response(views.cluster_view(_node(request)))


async def get_areas(request: web.Request) -> web.Response:
    """This node's frontswap areas."""
    return web.json_response({"areas": views.areas_view(_node(request))})


async def get_events(request: web.Request) -> web.Response:
    """Recent events, oldest first."""
    after = _int_query(request, "after", 0, 0, 1 << 62)
    limit = _int_query(request, "limit", 100, 1, MAX_EVENTS_LIMIT)
    events = _node(request).events.recent(after=after, limit=limit)
    return web.json_response({"events": [e.to_json() for e in events]})


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: recent events after Last-Event-ID (or ?after=), then live ones."""
    node = _node(request)
    after = _int_query(request, "after", 0, 0, 1 << 62)
    with contextlib.suppress(ValueError):
        after = max(after, int(request.headers.get("Last-Event-ID", "0")))
    streams = request.app[STREAMS_KEY]
    client = request.remote or "?"
    if streams.get(client, 0) >= MAX_STREAMS_PER_CLIENT:
        raise ApiError(
            429, "too-many-streams", f"at most {MAX_STREAMS_PER_CLIENT} event streams per client"
        )
    try:
        queue = node.events.subscribe()
    except TooManySubscribers as exc:
        raise ApiError(503, "too-many-streams", str(exc)) from None
    streams[client] = streams.get(client, 0) + 1
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        sent = after
        for event in node.events.recent(after=after):
            await response.write(_sse(event.to_json()))
            sent = event.id
        while True:
            try:
                async with asyncio.timeout(SSE_KEEPALIVE):
                    event = await queue.get()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event.id > sent:
                await response.write(_sse(event.to_json()))
                sent = event.id
    except ConnectionResetError:
        pass  # the reader went away
    finally:
        node.events.unsubscribe(queue)
        streams[client] -= 1
        if streams[client] <= 0:
            del streams[client]
    return response


def _sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['id']}\ndata: {data}\n\n".encode()


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = render(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this API."""
    return web.json_response(spec())


async def get_static(request: web.Request) -> web.Response:
    """The dashboard: plain files shipped in the package, no external resources."""
    name = request.match_info.get("name") or "index.html"
    if name not in STATIC:
        raise ApiError(404, "not-found", f"no such file: {name}")
    body = resources.files("ramster.admin").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return web.Response(
        body=body,
        headers={
            "Content-Type": f"{CONTENT_TYPES[suffix]}; charset=utf-8",
            "Cache-Control": "no-cache",
            # The page loads nothing from anywhere else, and says so to the browser.
            "Content-Security-Policy": "default-src 'self'; connect-src 'self'",
        },
    )


# -- writes ------------------------------------------------------------------------------------


async def post_drain(request: web.Request) -> web.Response:
    """Ask a node to drain: it takes no new pages; owners move theirs away."""
    require_token(request)
    target = request.match_info["node_id"]
    try:
        await request.app[CONTROL_KEY].drain(target)
    except UnknownNode:
        raise ApiError(404, "unknown-node", f"no member named {target!r} is known here") from None
    except RamsterError as exc:
        raise ApiError(502, "node-unreachable", f"{target} did not answer: {exc}") from None
    return web.json_response({"node": target, "draining": True}, status=202)


async def post_rebalance(request: web.Request) -> web.Response:
    """Ask the coordinator to even out the holders now."""
    require_token(request)
    coordinator = _node(request).coordination().coordinator
    try:
        coordinator = await request.app[CONTROL_KEY].rebalance()
    except RamsterError as exc:
        raise ApiError(
            503, "coordinator-unreachable", f"coordinator {coordinator} did not answer: {exc}"
        ) from None
    return web.json_response({"requested": True, "coordinator": coordinator}, status=202)


EXPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""What ExportSpec takes as a name."""


def _export_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not EXPORT_NAME.match(name):
        raise ApiError(400, "bad-request", f"not an export name: {name!r}")
    return name


async def get_exports(request: web.Request) -> web.Response:
    """NBD exports: served here, held here, and named by the members' heartbeats."""
    return web.json_response(request.app[CONTROL_KEY].exports_view())


async def post_move_export(request: web.Request) -> web.Response:
    """Have another node serve an export (it fences the old server, rebuilds, serves)."""
    require_token(request)
    name = _export_name(request)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad-request", 'the body must be JSON: {"to": NODE}') from None
    target = body.get("to") if isinstance(body, dict) else None
    if not isinstance(target, str) or not target:
        raise ApiError(400, "bad-request", 'name the node to move the export to: {"to": NODE}')
    force = isinstance(body, dict) and body.get("force") is True
    try:
        term = await request.app[CONTROL_KEY].move_export(name, target, force)
    except ExportPending as exc:
        # Taken over (the old server is fenced), served once the silent nodes answer.
        answer = {"name": name, "server": target, "state": "waiting", "detail": str(exc)}
        return web.json_response(answer, status=202)
    except UnknownNode:
        raise ApiError(404, "unknown-node", f"no member named {target!r} is known here") from None
    except (RemoteError, ExportTaken) as exc:
        raise ApiError(409, "cannot-move", f"{target} cannot take {name}: {exc}") from None
    except RamsterError as exc:
        raise ApiError(502, "node-unreachable", f"{target} did not answer: {exc}") from None
    return web.json_response({"name": name, "server": target, "term": term})


async def delete_export(request: web.Request) -> web.Response:
    """Delete an export everywhere: its server is fenced, every copy dropped."""
    require_token(request)
    name = _export_name(request)
    dropped = await request.app[CONTROL_KEY].delete_export(name)
    return web.json_response({"name": name, "dropped_pages": dropped})


def make_app(
    node: NodeSource,
    control: NodeControl,
    token: str | None,
    loop_lag: Histogram,
    last_lag: list[float],
    *,
    read_token: bool = False,
) -> web.Application:
    """The admin application of one node."""
    app = web.Application(middlewares=[errors, read_auth], client_max_size=64 << 10)
    app[NODE_KEY] = node
    app[CONTROL_KEY] = control
    app[TOKEN_KEY] = token
    app[READ_TOKEN_KEY] = read_token
    app[STREAMS_KEY] = {}
    app[REGISTRY_KEY] = registry_for(node, loop_lag, last_lag)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/node", get_node)
    app.router.add_get("/v1/cluster", get_cluster)
    app.router.add_get("/v1/areas", get_areas)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/events/stream", stream_events)
    app.router.add_post("/v1/nodes/{node_id}/drain", post_drain)
    app.router.add_post("/v1/rebalance", post_rebalance)
    app.router.add_get("/v1/exports", get_exports)
    app.router.add_post("/v1/exports/{name}/move", post_move_export)
    app.router.add_delete("/v1/exports/{name}", delete_export)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/", get_static)
    app.router.add_get("/static/{name}", get_static)
    return app
