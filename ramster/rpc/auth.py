"""The handshake, without I/O: version, cluster, both identities, a mutual proof of the secret,
and the session keys it yields.

    client -> server  HELLO      [version, cluster, client_nonce, key, role, node, incarnation,
                                  encrypt]
    server -> client  CHALLENGE  [version, cluster, server_nonce, node, incarnation, encrypt,
                                  proof("server")]
    client -> server  AUTH       [proof("client")]
    server -> client  READY      []   the first frame sealed with the session keys
    either way        REFUSED    [code, reason]   (then the connection closes)

`key` names the secret the client holds: "cluster" (nodes, and programs given the cluster
secret) or "client" (a program given only the client secret, which can never be a node).
The transcript is everything both sides said: version, cluster, both nonces, the key kind,
both identities and both encryption wishes. HKDF-SHA256 (salt: both nonces, info: the
transcript) turns the secret into four keys: one per side to prove itself (HMAC-SHA256 of the
transcript) and one per direction to seal frames (AES-256-GCM). Fresh nonces on both sides make
every session's keys new (a recorded handshake never verifies again, a recorded frame never
opens in another session); the role is inside each proof, so one cannot be reflected back as
the other; the server proves itself first, and a client never sends its proof to a peer that
did not. A relay that forwards the handshake ends up with neither the keys nor a way to send
a frame that opens. Frames are encrypted unless both sides turned encryption off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ramster.errors import AuthError, ProtocolError, VersionMismatch
from ramster.rpc.const import (
    KEY_BYTES,
    MAX_IDENTITY_BYTES,
    MIN_SECRET_BYTES,
    NONCE_BYTES,
    PROTOCOL_VERSION,
)
from ramster.rpc.session import Identity, Opener, Role, Sealer
from ramster.types import Incarnation, NodeId

SECRET_ENV = "RAMSTER_CLUSTER_SECRET"
"""Environment variable holding the cluster secret when no secret file is given."""
CLIENT_SECRET_ENV = "RAMSTER_CLIENT_SECRET"
"""Environment variable holding the client secret when no client secret file is given."""

_LABEL = b"ramster-rpc-v2\x00"
_PROOF_BYTES = 32


class KeyKind(Enum):
    """Which secret a key is: the cluster's (nodes) or the clients' (programs only)."""

    CLUSTER = "cluster"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Secret:
    """A shared secret; its repr never shows the bytes."""

    value: bytes = field(repr=False)
    kind: KeyKind = KeyKind.CLUSTER

    def __post_init__(self) -> None:
        if len(self.value) < MIN_SECRET_BYTES:
            raise ValueError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")


def load_secret(
    file: str | os.PathLike[str] | None = None,
    env: str = SECRET_ENV,
    kind: KeyKind = KeyKind.CLUSTER,
) -> Secret:
    """The secret from a file (trailing newline dropped) or else from an environment variable."""
    if file is not None:
        path = Path(file)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} is readable by others; chmod 600 it")
        value = path.read_bytes().rstrip(b"\r\n")
        if not value:
            raise ValueError(f"{path} is empty")
        return Secret(value, kind)
    text = os.environ.get(env)
    if not text:
        raise LookupError(f"no secret file given and ${env} is not set")
    return Secret(text.encode(), kind)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a finished handshake gives one side: the peer, and how to seal and open frames."""

    peer: Identity
    sealer: Sealer
    opener: Opener
    encrypted: bool


def _field(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


@dataclass(frozen=True, slots=True)
class _Transcript:
    version: int
    cluster: str
    client_nonce: bytes
    server_nonce: bytes
    kind: KeyKind
    client: Identity
    client_encrypt: bool
    server: Identity
    server_encrypt: bool

    def encode(self) -> bytes:
        return b"".join(
            [
                _LABEL,
                struct.pack(">I", self.version),
                _field(self.cluster),
                self.client_nonce,
                self.server_nonce,
                _field(self.kind.value),
                _field(self.client.role.value),
                _field(self.client.node_id),
                _field(self.client.incarnation),
                bytes([self.client_encrypt]),
                _field(self.server.node_id),
                _field(self.server.incarnation),
                bytes([self.server_encrypt]),
            ]
        )

    @property
    def encrypted(self) -> bool:
        return self.client_encrypt or self.server_encrypt

    def keys(self, secret: Secret) -> tuple[bytes, bytes, bytes, bytes]:
        """(server proof key, client proof key, client->server key, server->client key)."""
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=4 * KEY_BYTES,
            salt=self.client_nonce + self.server_nonce,
            info=self.encode(),
        ).derive(secret.value)
        k = KEY_BYTES
        return okm[:k], okm[k : 2 * k], okm[2 * k : 3 * k], okm[3 * k :]


def _proof(key: bytes, side: bytes, transcript: _Transcript) -> bytes:
    return hmac.new(key, side + transcript.encode(), hashlib.sha256).digest()


def _text(obj: object, what: str) -> str:
    if type(obj) is not str or len(obj.encode()) > MAX_IDENTITY_BYTES:
        raise ProtocolError(f"malformed {what}")
    return obj


def _flag(obj: object, what: str) -> bool:
    if type(obj) is not bool:
        raise ProtocolError(f"malformed {what}")
    return obj


def _version(params: list[object], what: str) -> None:
    if not params or type(params[0]) is not int:
        raise ProtocolError(f"malformed {what}")
    if params[0] != PROTOCOL_VERSION:
        raise VersionMismatch(f"peer speaks protocol {params[0]}, this node {PROTOCOL_VERSION}")


def _nonce(obj: object, what: str) -> bytes:
    if type(obj) is not bytes or len(obj) != NONCE_BYTES:
        raise ProtocolError(f"malformed {what} nonce")
    return obj


def _peer_identity(role: object, node: object, incarnation: object) -> Identity:
    if role == Role.NODE.value:
        node_id, inc = _text(node, "hello"), _text(incarnation, "hello")
        if not node_id or not inc:
            raise ProtocolError("a node must name its id and incarnation")
        return Identity(Role.NODE, NodeId(node_id), Incarnation(inc))
    if role == Role.CLIENT.value:
        if node != "" or incarnation != "":
            raise ProtocolError("a client names no node")
        return Identity(Role.CLIENT)
    raise ProtocolError("malformed hello role")


class ClientHandshake:
    """The client's side: hello(), then challenge() -> auth params, then ready(keys)."""

    def __init__(
        self,
        secret: Secret,
        cluster: str,
        identity: Identity | None = None,
        *,
        encrypt: bool = True,
        nonce: bytes | None = None,
    ) -> None:
        self._secret = secret
        self._cluster = cluster
        self.identity = identity if identity is not None else Identity.client()
        if self.identity.role is Role.NODE and secret.kind is not KeyKind.CLUSTER:
            raise ValueError("a node authenticates with the cluster secret, not a client secret")
        self._encrypt = encrypt
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self.keys: SessionKeys | None = None
        self.done = False

    def hello(self) -> list[object]:
        """Params of the HELLO notification."""
        me = self.identity
        return [
            PROTOCOL_VERSION,
            self._cluster,
            self._nonce,
            self._secret.kind.value,
            me.role.value,
            me.node_id,
            me.incarnation,
            self._encrypt,
        ]

    def challenge(self, params: list[object]) -> list[object]:
        """Check the server's CHALLENGE; return the params of AUTH (the keys are then set)."""
        if self.keys is not None:
            raise ProtocolError("second challenge")
        _version(params, "challenge")
        if len(params) != 7:
            raise ProtocolError("malformed challenge")
        _, cluster, nonce, node, incarnation, encrypt, proof = params
        if type(cluster) is not str or type(proof) is not bytes:
            raise ProtocolError("malformed challenge")
        if cluster != self._cluster:
            raise AuthError(f"peer belongs to cluster {cluster!r}, not {self._cluster!r}")
        server_nonce = _nonce(nonce, "challenge")
        if server_nonce == self._nonce:
            raise AuthError("bad server nonce")
        server = Identity(
            Role.NODE,
            NodeId(_text(node, "challenge")),
            Incarnation(_text(incarnation, "challenge")),
        )
        transcript = _Transcript(
            PROTOCOL_VERSION,
            cluster,
            self._nonce,
            server_nonce,
            self._secret.kind,
            self.identity,
            self._encrypt,
            server,
            _flag(encrypt, "challenge"),
        )
        server_key, client_key, up, down = transcript.keys(self._secret)
        if not hmac.compare_digest(_proof(server_key, b"server", transcript), proof):
            raise AuthError("the peer does not know the cluster secret")
        on = transcript.encrypted
        self.keys = SessionKeys(server, Sealer(up, on), Opener(down, on), on)
        return [_proof(client_key, b"client", transcript)]

    def ready(self, params: list[object]) -> None:
        """Accept READY (it arrived sealed); only valid after a verified challenge."""
        if self.keys is None or params:
            raise ProtocolError("ready before challenge")
        self.done = True


class ServerHandshake:
    """The server's side: hello() -> challenge params, then auth() -> the session keys."""

    def __init__(
        self,
        secret: Secret,
        cluster: str,
        identity: Identity | None = None,
        *,
        client_secret: Secret | None = None,
        encrypt: bool = True,
        nonce: bytes | None = None,
    ) -> None:
        self._secrets = {KeyKind.CLUSTER: secret}
        if client_secret is not None:
            self._secrets[KeyKind.CLIENT] = client_secret
        self._cluster = cluster
        self.identity = identity if identity is not None else Identity(Role.NODE)
        self._encrypt = encrypt
        self._nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
        self._pending: tuple[_Transcript, tuple[bytes, bytes, bytes, bytes]] | None = None
        self.keys: SessionKeys | None = None

    @property
    def done(self) -> bool:
        """True once the client proved itself."""
        return self.keys is not None

    def hello(self, params: list[object]) -> list[object]:
        """Check the client's HELLO; return the params of CHALLENGE."""
        if self._pending is not None or self.keys is not None:
            raise ProtocolError("second hello")
        _version(params, "hello")
        if len(params) != 8 or type(params[1]) is not str:
            raise ProtocolError("malformed hello")
        _, cluster, nonce, key, role, node, incarnation, encrypt = params
        client_nonce = _nonce(nonce, "hello")
        if cluster != self._cluster:
            raise AuthError(f"peer belongs to cluster {cluster!r}, not {self._cluster!r}")
        if client_nonce == self._nonce:
            raise AuthError("reflected nonce")
        try:
            kind = KeyKind(key)
        except ValueError:
            raise ProtocolError("malformed hello key") from None
        peer = _peer_identity(role, node, incarnation)
        if peer.role is Role.NODE and kind is not KeyKind.CLUSTER:
            raise AuthError("a node must prove the cluster secret")
        secret = self._secrets.get(kind)
        if secret is None:
            raise AuthError("this server has no client secret: use the cluster secret")
        transcript = _Transcript(
            PROTOCOL_VERSION,
            self._cluster,
            client_nonce,
            self._nonce,
            kind,
            peer,
            _flag(encrypt, "hello"),
            self.identity,
            self._encrypt,
        )
        keys = transcript.keys(secret)
        self._pending = (transcript, keys)
        proof = _proof(keys[0], b"server", transcript)
        me = self.identity
        return [
            PROTOCOL_VERSION,
            self._cluster,
            self._nonce,
            me.node_id,
            me.incarnation,
            self._encrypt,
            proof,
        ]

    def auth(self, params: list[object]) -> list[object]:
        """Check the client's AUTH; return the params of READY (the keys are then set)."""
        if self._pending is None or self.keys is not None:
            raise ProtocolError("auth out of order")
        if len(params) != 1 or type(params[0]) is not bytes or len(params[0]) != _PROOF_BYTES:
            raise ProtocolError("malformed auth")
        transcript, (_, client_key, up, down) = self._pending
        if not hmac.compare_digest(_proof(client_key, b"client", transcript), params[0]):
            raise AuthError("the peer does not know the cluster secret")
        on = transcript.encrypted
        self.keys = SessionKeys(transcript.client, Sealer(down, on), Opener(up, on), on)
        return []
