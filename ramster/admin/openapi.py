"""The OpenAPI 3 document of the admin API, kept true by a schemathesis run against a live node."""

from __future__ import annotations

from typing import Any

from ramster._version import __version__

Schema = dict[str, Any]


def _obj(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": props, "required": required or list(props)}


INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NULLABLE_INT: Schema = {"type": ["integer", "null"]}
COUNTS: Schema = {"type": "object", "additionalProperties": INT}

ERROR = _obj(
    {"error": _obj({"code": STR, "message": STR})},
)
HEALTH = _obj(
    {
        "status": {"enum": ["ok", "starting"]},
        "live": BOOL,
        "ready": BOOL,
        "node": STR,
        "version": STR,
    }
)
POOL: Schema = {"type": "object", "additionalProperties": {"type": ["integer", "boolean"]}}
NODE = _obj(
    {
        "node": STR,
        "incarnation": STR,
        "cluster": STR,
        "version": STR,
        "role": {"enum": ["coordinator", "member"]},
        "coordinator": STR,
        "term": INT,
        "uptime_s": NUM,
        "rpc": STR,
        "admin": {"type": ["string", "null"]},
        "page_size": INT,
        "replicas": INT,
        "budgets": _obj({"local": INT, "lent": INT}),
        "draining": BOOL,
        "pool": POOL,
        "lent": {
            "type": "object",
            "properties": {"by_owner": COUNTS},
            "additionalProperties": {"type": ["integer", "boolean"]},
            "description": "the lent pool's counters, and its pages per owner (by_owner)",
        },
        "remote": {"type": "object", "additionalProperties": NUM},
        "ephemeral": {
            "type": "object",
            "properties": {
                "puts": INT,
                "succ_gets": INT,
                "failed_gets": INT,
                "evicts": INT,
                "invalidates": INT,
                "areas": {"type": "array", "items": INT},
                "pages": INT,
                "bytes": INT,
                "spilled_pages": INT,
                "remote_misses": INT,
                "lent_pages": INT,
                "lent_bytes": INT,
                "lent_evicts": INT,
            },
            "description": "ephemeral (cleancache) areas: puts, hits (succ_gets), misses "
            "(failed_gets), evictions and invalidations, named as cleancache's; pages and "
            "compressed bytes here, spilled to peers and held for peers",
        },
        "counters": COUNTS,
        "copies_refused": INT,
        "nbd": {"type": ["object", "null"], "description": "NBD server counters, if it serves"},
        "orders": _obj(
            {"busy": {"type": ["string", "null"]}, "repairing_pages": INT, "refused": INT}
        ),
    }
)
MEMBER = _obj(
    {
        "node": STR,
        "rpc": STR,
        "state": {"enum": ["alive", "suspect", "dead", "unknown"]},
        "role": {"enum": ["coordinator", "member"]},
        "incarnation": {"type": ["string", "null"]},
        "lent_budget": NULLABLE_INT,
        "lent_free": NULLABLE_INT,
        "lent_pages": NULLABLE_INT,
        "local_used": NULLABLE_INT,
        "local_budget": NULLABLE_INT,
        "local_ephemeral": NULLABLE_INT,
        "lent_used": NULLABLE_INT,
        "lent_ephemeral": NULLABLE_INT,
        "draining": {"type": ["boolean", "null"]},
        "under_replicated": NULLABLE_INT,
        "repairing_pages": NULLABLE_INT,
        "uptime_s": {"type": ["number", "null"]},
        "admin": {"type": ["string", "null"]},
        "counters": {"type": ["object", "null"], "additionalProperties": INT},
    },
    required=["node", "rpc", "state", "role"],
)
CLUSTER = _obj(
    {
        "cluster": STR,
        "answered_by": STR,
        "coordinator": STR,
        "term": INT,
        "members": {"type": "array", "items": MEMBER},
        "pages": {"type": "object", "additionalProperties": COUNTS},
        "bytes": {"type": "object", "additionalProperties": COUNTS},
        "under_replicated_pages": INT,
        "rebalance": _obj(
            {
                "repairing_pages": INT,
                "orders_pending": {"type": ["object", "null"], "additionalProperties": STR},
                "orders_sent": NULLABLE_INT,
                "pages_moved": NULLABLE_INT,
            }
        ),
    }
)
EXPORT_NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
AREAS = _obj(
    {
        "areas": {
            "type": "array",
            "items": _obj(
                {
                    "area": INT,
                    "kind": {"enum": ["persistent", "ephemeral"]},
                    "local_pages": INT,
                    "remote_pages": INT,
                }
            ),
        }
    }
)
SERVED_EXPORT = _obj(
    {
        "name": STR,
        "server": STR,
        "term": INT,
        "durability": STR,
        "size": INT,
        "replicas": INT,
        "capacity_bytes": {
            "type": "integer",
            "description": "what the cluster can hold for it now: the lent budgets of the live "
            "nodes that may take its copies (not its server) over R (over fewer copies when "
            "fewer nodes lend); writes past it get ENOSPC",
        },
        "fits": {"type": "boolean", "description": "size <= capacity_bytes"},
        "state": STR,
        "pages": INT,
        "pages_lost": INT,
        "under_replicated": INT,
    }
)
EXPORTS = _obj(
    {
        "served": {"type": "array", "items": SERVED_EXPORT},
        "held": {"type": "array", "items": {"type": "object"}},
        "servers": {"type": "object", "additionalProperties": _obj({"server": STR, "term": INT})},
    }
)
EVENT = _obj({"id": INT, "time": NUM, "kind": STR, "node": STR, "detail": STR})
EVENTS = _obj({"events": {"type": "array", "items": EVENT}})


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(ERROR, description)


def _get(summary: str, schema: Schema, params: list[Schema] | None = None) -> Schema:
    op: Schema = {
        "summary": summary,
        "responses": {"200": _json(schema, summary), "400": _error("bad query parameter")},
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def _query_int(name: str, description: str, lo: int, hi: int) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": lo, "maximum": hi},
    }


WRITE_ERRORS = {
    "401": _error("missing or wrong bearer token"),
    "403": _error("this node has no admin token configured"),
}


def spec() -> Schema:
    """The whole document."""
    after = _query_int("after", "only events with a higher id", 0, 1 << 62)
    limit = _query_int("limit", "at most this many (the newest)", 1, 1000)
    health = _get("liveness and readiness", HEALTH)
    health["get"]["responses"]["503"] = _json(HEALTH, "not ready (starting or stopping)")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ramster admin API",
            "version": __version__,
            "description": "One node's view of itself and of the cluster. Reads need no "
            "token; mutating calls need `Authorization: Bearer <token>`. Sizes are bytes, "
            "times seconds.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/health": health,
            "/v1/node": _get("this node: identity, role, budgets, pools", NODE),
            "/v1/cluster": _get(
                "members, coordinator and term, capacity, pages per owner and holder, repairs",
                CLUSTER,
            ),
            "/v1/areas": _get("this node's frontswap areas", AREAS),
            "/v1/events": _get("recent events, oldest first", EVENTS, [after, limit]),
            "/v1/events/stream": {
                "get": {
                    "summary": "events as Server-Sent Events: recent ones after Last-Event-ID "
                    "or ?after=, then live ones; never ends by itself",
                    "parameters": [after],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": STR}},
                        },
                        "400": _error("bad query parameter"),
                        "503": _error("too many streams open"),
                    },
                }
            },
            "/v1/nodes/{node_id}/drain": {
                "post": {
                    "summary": "drain a node: it takes no new pages and owners move theirs away",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {"name": "node_id", "in": "path", "required": True, "schema": STR}
                    ],
                    "responses": {
                        "202": _json(_obj({"node": STR, "draining": BOOL}), "draining"),
                        **WRITE_ERRORS,
                        "404": _error("no such member"),
                        "502": _error("the node did not answer"),
                    },
                }
            },
            "/v1/rebalance": {
                "post": {
                    "summary": "ask the coordinator to even out the holders now",
                    "security": [{"bearer": []}],
                    "responses": {
                        "202": _json(_obj({"requested": BOOL, "coordinator": STR}), "requested"),
                        **WRITE_ERRORS,
                        "503": _error("the coordinator did not answer"),
                    },
                }
            },
            "/v1/exports": _get(
                "NBD exports: those served here, those held here, and every server the "
                "heartbeats name",
                EXPORTS,
            ),
            "/v1/exports/{name}/move": {
                "post": {
                    "summary": "serve an export from another node: it takes the next term "
                    "(the old server is fenced), rebuilds and serves",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": EXPORT_NAME}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _obj(
                                    {
                                        "to": {"type": "string", "minLength": 1},
                                        "force": {"type": "boolean"},
                                    },
                                    ["to"],
                                )
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_obj({"name": STR, "server": STR, "term": INT}), "moved"),
                        "202": _json(
                            _obj({"name": STR, "server": STR, "state": STR, "detail": STR}),
                            "taken over (the old server is fenced) but not served yet: a node "
                            "that may hold newer copies stopped answering; it serves once it does",
                        ),
                        **WRITE_ERRORS,
                        "400": _error("no target node named, or not an export name"),
                        "404": _error("no such member"),
                        "409": _error(
                            "the target cannot take the export (without force: it cannot "
                            "hear every member, the current server among them)"
                        ),
                        "502": _error("the target did not answer"),
                    },
                }
            },
            "/v1/exports/{name}": {
                "delete": {
                    "summary": "delete an export cluster-wide: its server is fenced, every copy "
                    "dropped",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": EXPORT_NAME}
                    ],
                    "responses": {
                        "200": _json(_obj({"name": STR, "dropped_pages": INT}), "deleted"),
                        **WRITE_ERRORS,
                        "400": _error("not an export name"),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text format",
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": STR}},
                        }
                    },
                }
            },
        },
    }
