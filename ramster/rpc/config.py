"""Validated, frozen configuration of RPC servers and clients."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ramster.rpc.const import MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_SOURCE

_DEFAULT_CLUSTER = "ramster"


def _check_timeout(name: str, value: object, *, optional: bool) -> None:
    if value is None:
        if not optional:
            raise ValueError(f"{name} must be a positive number of seconds, got None")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """Limits and timeouts of one side of the RPC; timeouts are float seconds, None means none."""

    cluster: str = _DEFAULT_CLUSTER
    """Name of the cluster; a peer of another cluster is refused at the handshake."""
    max_message_bytes: int = 8 << 20
    """Largest msgpack body accepted or sent; a larger announced frame closes the connection
    before any of it is buffered. 8 MiB holds a 64-page batch many times over."""
    max_in_flight: int = 128
    """Calls outstanding per connection: past it a client waits, a server answers Busy."""
    max_connections: int = 512
    """Authenticated connections a server keeps at once; one more is told Busy and closed."""
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    """Connections still in their handshake, counted apart from the authenticated ones; past
    it the oldest handshake is dropped."""
    max_unauthenticated_per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE
    """Handshakes under way from one address; more from there are refused."""
    encrypt: bool = True
    """Encrypt every frame after the handshake (AES-256-GCM). False asks for integrity only
    (frames in the clear, still authenticated): for a trusted network, and only if the peer
    agrees (a session is encrypted when either side wants it)."""
    idle_timeout: float | None = 60.0
    """A server closes a connection that completed no message for this long and has no call
    running (a silent or trickling client)."""
    call_timeout: float | None = 10.0
    """Default deadline of a client call, including the wait for a free in-flight slot."""
    handshake_timeout: float = 5.0
    """The whole handshake must finish within this; a server counts and closes stragglers."""
    connect_timeout: float = 5.0
    """TCP (and TLS) connect plus handshake, on the client side."""
    pool_size: int = 1
    """Connections a client keeps to one peer; calls are pipelined over them."""
    reconnect_min: float = 0.05
    reconnect_max: float = 5.0
    """Bounds of the jittered exponential backoff after a failed connect."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """This node's certificate chain and private key (PEM); both or neither."""
    tls_ca: Path | None = None
    """CA bundle that peers' certificates must chain to; on a server it turns on mutual TLS."""
    tls_client_auth: bool = True
    """With tls_ca, a server requires client certificates from it (mutual TLS); False: the
    server only proves itself, and clients are authenticated by the secret alone."""

    def __post_init__(self) -> None:
        name: object = self.cluster
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ValueError(f"cluster must be a name of 1 to 64 characters, got {self.cluster!r}")
        _check_count("max_message_bytes", self.max_message_bytes, 1024)
        if self.max_message_bytes > (1 << 31):
            raise ValueError(f"max_message_bytes must be <= 2 GiB, got {self.max_message_bytes}")
        _check_count("max_in_flight", self.max_in_flight, 1)
        _check_count("max_connections", self.max_connections, 1)
        _check_count("max_unauthenticated", self.max_unauthenticated, 1)
        _check_count("max_unauthenticated_per_source", self.max_unauthenticated_per_source, 1)
        if not isinstance(self.encrypt, bool):
            raise TypeError(f"encrypt must be True or False, got {self.encrypt!r}")
        _check_count("pool_size", self.pool_size, 1)
        _check_timeout("idle_timeout", self.idle_timeout, optional=True)
        _check_timeout("call_timeout", self.call_timeout, optional=True)
        _check_timeout("handshake_timeout", self.handshake_timeout, optional=False)
        _check_timeout("connect_timeout", self.connect_timeout, optional=False)
        _check_timeout("reconnect_min", self.reconnect_min, optional=False)
        _check_timeout("reconnect_max", self.reconnect_max, optional=False)
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")

    @property
    def tls(self) -> bool:
        """True when connections use TLS."""
        return self.tls_cert is not None or self.tls_ca is not None
