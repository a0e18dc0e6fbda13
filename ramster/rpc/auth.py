"""The handshake, without I/O: version, cluster name and a mutual HMAC-SHA256 challenge.

    client -> server  HELLO      [version, cluster, client_nonce]
    server -> client  CHALLENGE  [version, cluster, server_nonce, mac("server")]
    client -> server  AUTH       [mac("client")]
    server -> client  READY      []
    either way        REFUSED    [code, reason]   (then the connection closes)

mac(role) = HMAC-SHA256(secret, label | role | version | cluster | client_nonce | server_nonce).
Each side contributes a fresh nonce, so a recorded transcript never verifies again (replay), and
the role is inside the MAC, so a server's answer cannot be reflected back as a client's.
The server proves itself first; a client never sends its MAC to a peer that did not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ramster.errors import AuthError, ProtocolError, VersionMismatch
from ramster.rpc.const import MIN_SECRET_BYTES, NONCE_BYTES, PROTOCOL_VERSION

SECRET_ENV = "RAMSTER_CLUSTER_SECRET"
"""Environment variable holding the cluster secret when no secret file is given."""

_LABEL = b"ramster-rpc-handshake\x00"
_MAC_BYTES = 32


@dataclass(frozen=True, slots=True)
class Secret:
    """The cluster secret; its repr never shows the bytes."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value) < MIN_SECRET_BYTES:
            raise ValueError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")


def load_secret(file: str | os.PathLike[str] | None = None, env: str = SECRET_ENV) -> Secret:
    """The secret from a file (trailing newline dropped) or else from an environment variable."""
    if file is not None:
        path = Path(file)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} is readable by others; chmod 600 it")
        value = path.read_bytes().rstrip(b"\r\n")
        if not value:
            raise ValueError(f"{path} is empty")
        return Secret(value)
    text = os.environ.get(env)
    if not text:
        raise LookupError(f"no secret file given and ${env} is not set")
    return Secret(text.encode())


def _mac(
    secret: Secret, role: bytes, version: int, cluster: str, nonces: tuple[bytes, bytes]
) -> bytes:
    """HMAC over everything both sides said; nonces is (client's, server's), fixed-size."""
    name = cluster.encode()
    msg = b"".join(
        [_LABEL, role, struct.pack(">IH", version, len(name)), name, nonces[0], nonces[1]]
    )
    return hmac.new(secret.value, msg, hashlib.sha256).digest()


def _hello_fields(params: list[object]) -> tuple[int, str, bytes]:
    if len(params) < 3:
        raise ProtocolError("malformed hello")
    version, cluster, nonce = params[0], params[1], params[2]
    if type(version) is not int:
        raise ProtocolError("malformed hello")
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(f"peer speaks protocol {version}, this node {PROTOCOL_VERSION}")
    if len(params) != 3 or type(cluster) is not str or type(nonce) is not bytes:
        raise ProtocolError("malformed hello")
    if len(nonce) != NONCE_BYTES:
        raise ProtocolError("malformed hello nonce")
    return version, cluster, nonce


class ClientHandshake:
    """The client's side: hello(), then challenge() -> auth params, then ready()."""

    def __init__(self, secret: Secret, cluster: str, nonce: bytes | None = None) -> None:
        self._secret = secret
        self._cluster = cluster
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self._server_nonce: bytes | None = None
        self.done = False

    def hello(self) -> list[object]:
        """Params of the HELLO notification."""
        return [PROTOCOL_VERSION, self._cluster, self._nonce]

    def challenge(self, params: list[object]) -> list[object]:
        """Check the server's CHALLENGE; return the params of AUTH."""
        if self._server_nonce is not None:
            raise ProtocolError("second challenge")
        if len(params) != 4:
            raise ProtocolError("malformed challenge")
        version, cluster, nonce, mac = params
        if type(version) is not int:
            raise ProtocolError("malformed challenge")
        if version != PROTOCOL_VERSION:
            raise VersionMismatch(f"peer speaks protocol {version}, this node {PROTOCOL_VERSION}")
        if type(cluster) is not str or type(nonce) is not bytes or type(mac) is not bytes:
            raise ProtocolError("malformed challenge")
        if cluster != self._cluster:
            raise AuthError(f"peer belongs to cluster {cluster!r}, not {self._cluster!r}")
        if len(nonce) != NONCE_BYTES or nonce == self._nonce:
            raise AuthError("bad server nonce")
        expected = _mac(self._secret, b"server", version, cluster, (self._nonce, nonce))
        if not hmac.compare_digest(expected, mac):
            raise AuthError("the peer does not know the cluster secret")
        self._server_nonce = nonce
        return [_mac(self._secret, b"client", version, cluster, (self._nonce, nonce))]

    def ready(self, params: list[object]) -> None:
        """Accept READY; only valid after a verified challenge."""
        if self._server_nonce is None or params:
            raise ProtocolError("ready before challenge")
        self.done = True


class ServerHandshake:
    """The server's side: hello() -> challenge params, then auth() -> ready params."""

    def __init__(self, secret: Secret, cluster: str, nonce: bytes | None = None) -> None:
        self._secret = secret
        self._cluster = cluster
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self._client_nonce: bytes | None = None
        self.done = False

    def hello(self, params: list[object]) -> list[object]:
        """Check the client's HELLO; return the params of CHALLENGE."""
        if self._client_nonce is not None:
            raise ProtocolError("second hello")
        version, cluster, client_nonce = _hello_fields(params)
        if cluster != self._cluster:
            raise AuthError(f"peer belongs to cluster {cluster!r}, not {self._cluster!r}")
        if client_nonce == self._nonce:
            raise AuthError("reflected nonce")
        self._client_nonce = client_nonce
        mac = _mac(self._secret, b"server", version, cluster, (client_nonce, self._nonce))
        return [PROTOCOL_VERSION, self._cluster, self._nonce, mac]

    def auth(self, params: list[object]) -> list[object]:
        """Check the client's AUTH; return the params of READY."""
        if self._client_nonce is None or self.done:
            raise ProtocolError("auth out of order")
        if len(params) != 1 or type(params[0]) is not bytes or len(params[0]) != _MAC_BYTES:
            raise ProtocolError("malformed auth")
        nonces = (self._client_nonce, self._nonce)
        expected = _mac(self._secret, b"client", PROTOCOL_VERSION, self._cluster, nonces)
        if not hmac.compare_digest(expected, params[0]):
            raise AuthError("the peer does not know the cluster secret")
        self.done = True
        return []
