"""The handshake state machines and secret loading, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramster.errors import AuthError, ProtocolError, VersionMismatch
from ramster.rpc.auth import SECRET_ENV, ClientHandshake, Secret, ServerHandshake, load_secret

SECRET = Secret(b"s" * 32)
OTHER = Secret(b"o" * 32)


def test_both_sides_agree() -> None:
    client = ClientHandshake(SECRET, "c")
    server = ServerHandshake(SECRET, "c")
    auth = client.challenge(server.hello(client.hello()))
    client.ready(server.auth(auth))
    assert client.done
    assert server.done


def test_wrong_secret_fails_on_both_sides() -> None:
    client = ClientHandshake(OTHER, "c")
    server = ServerHandshake(SECRET, "c")
    with pytest.raises(AuthError):
        client.challenge(server.hello(client.hello()))
    # A client without the secret cannot produce a valid MAC either.
    server2 = ServerHandshake(SECRET, "c")
    server2.hello(ClientHandshake(OTHER, "c").hello())
    with pytest.raises(AuthError):
        server2.auth([b"\x00" * 32])
    assert not server2.done


def test_replayed_transcript_fails() -> None:
    client = ClientHandshake(SECRET, "c")
    hello = client.hello()
    first = ServerHandshake(SECRET, "c")
    auth = client.challenge(first.hello(hello))
    first.auth(auth)
    # An eavesdropper replays hello and auth to a new server: its fresh nonce breaks the MAC.
    second = ServerHandshake(SECRET, "c")
    second.hello(hello)
    with pytest.raises(AuthError):
        second.auth(auth)


def test_replayed_challenge_fails_at_the_client() -> None:
    old_client = ClientHandshake(SECRET, "c")
    challenge = ServerHandshake(SECRET, "c").hello(old_client.hello())
    with pytest.raises(AuthError):
        ClientHandshake(SECRET, "c").challenge(challenge)


def test_reflected_server_mac_is_not_a_client_mac() -> None:
    client_hello = ClientHandshake(SECRET, "c").hello()
    server = ServerHandshake(SECRET, "c")
    challenge = server.hello(client_hello)
    with pytest.raises(AuthError):
        server.auth([challenge[3]])


def test_reflected_nonce_is_refused() -> None:
    server = ServerHandshake(SECRET, "c", nonce=b"n" * 32)
    with pytest.raises(AuthError):
        server.hello([1, "c", b"n" * 32])


def test_other_cluster_and_version_are_refused() -> None:
    with pytest.raises(AuthError):
        ServerHandshake(SECRET, "c").hello(ClientHandshake(SECRET, "d").hello())
    with pytest.raises(VersionMismatch):
        ServerHandshake(SECRET, "c").hello([2, "c", b"n" * 32])
    challenge = ServerHandshake(SECRET, "c").hello(ClientHandshake(SECRET, "c").hello())
    challenge[0] = 2
    with pytest.raises(VersionMismatch):
        ClientHandshake(SECRET, "c").challenge(challenge)


@pytest.mark.parametrize(
    "hello", [[], [1, "c"], [1, "c", b"short"], [1, 2, b"n" * 32], ["1", "c", b"n" * 32]]
)
def test_malformed_hello(hello: list[object]) -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake(SECRET, "c").hello(hello)


def test_out_of_order_steps() -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake(SECRET, "c").auth([b"x" * 32])
    with pytest.raises(ProtocolError):
        ClientHandshake(SECRET, "c").ready([])


def test_load_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"from-a-file-0123456789\n")
    path.chmod(0o600)
    assert load_secret(path).value == b"from-a-file-0123456789"
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        load_secret(path)
    monkeypatch.setenv(SECRET_ENV, "from-the-environment-42")
    assert load_secret().value == b"from-the-environment-42"
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(LookupError):
        load_secret()
    with pytest.raises(ValueError, match="at least"):
        Secret(b"short")
    assert "sss" not in repr(SECRET)
