"""The handshake state machines, the session keys they derive, and secret loading: no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramster.errors import AuthError, IntegrityError, ProtocolError, VersionMismatch
from ramster.rpc.auth import (
    SECRET_ENV,
    ClientHandshake,
    KeyKind,
    Secret,
    ServerHandshake,
    SessionKeys,
    load_secret,
)
from ramster.rpc.const import PROTOCOL_VERSION, TAG_BYTES
from ramster.rpc.session import Identity, Role
from ramster.types import NodeId

SECRET = Secret(b"s" * 32)
OTHER = Secret(b"o" * 32)
CLIENT_SECRET = Secret(b"c" * 32, KeyKind.CLIENT)
NODE_A = Identity.node("a", "1-a")
NODE_B = Identity.node("b", "1-b")


def shake(client: ClientHandshake, server: ServerHandshake) -> tuple[SessionKeys, SessionKeys]:
    """Run a whole handshake; (client's keys, server's keys)."""
    auth = client.challenge(server.hello(client.hello()))
    client.ready(server.auth(auth))
    assert client.keys is not None and server.keys is not None
    return client.keys, server.keys


def test_both_sides_agree_and_learn_who_the_other_is() -> None:
    client = ClientHandshake(SECRET, "c", NODE_A)
    server = ServerHandshake(SECRET, "c", NODE_B)
    mine, theirs = shake(client, server)
    assert client.done and server.done
    assert mine.peer == NODE_B
    assert theirs.peer == NODE_A
    assert mine.encrypted and theirs.encrypted


def test_session_keys_seal_one_direction_each() -> None:
    mine, theirs = shake(ClientHandshake(SECRET, "c", NODE_A), ServerHandshake(SECRET, "c"))
    sealed = b"".join(mine.sealer.seal(b"HDR!", b"hello server"))
    assert b"hello server" not in sealed
    assert bytes(theirs.opener.open(memoryview(sealed[4:]), 0)) == b"hello server"
    back = b"".join(theirs.sealer.seal(b"HDR!", b"hello client"))
    # The other direction's key does not open it: a frame cannot be reflected back.
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(back[4:]), 0)


def test_every_session_has_fresh_keys() -> None:
    first, _ = shake(ClientHandshake(SECRET, "c"), ServerHandshake(SECRET, "c"))
    _, second = shake(ClientHandshake(SECRET, "c"), ServerHandshake(SECRET, "c"))
    sealed = b"".join(first.sealer.seal(b"HDR!", b"page bytes"))
    with pytest.raises(IntegrityError):
        second.opener.open(memoryview(sealed[4:]), 0)


def _pair() -> tuple[SessionKeys, SessionKeys]:
    return shake(ClientHandshake(SECRET, "c", NODE_A), ServerHandshake(SECRET, "c"))


def _frames(keys: SessionKeys, n: int) -> list[bytes]:
    return [b"".join(keys.sealer.seal(b"HDR!", f"frame {i}".encode()))[4:] for i in range(n)]


def test_a_modified_frame_does_not_open() -> None:
    mine, theirs = _pair()
    frame = bytearray(_frames(mine, 1)[0])
    frame[3] ^= 1
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(bytes(frame)), 0)


def test_reordered_replayed_and_dropped_frames_do_not_open() -> None:
    mine, theirs = _pair()
    one, two, three = _frames(mine, 3)
    assert bytes(theirs.opener.open(memoryview(one), 0)) == b"frame 0"
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(one), 0)  # replayed
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(three), 0)  # two was dropped (or three moved ahead)
    assert bytes(theirs.opener.open(memoryview(two), 0)) == b"frame 1"


def test_an_injected_frame_does_not_open() -> None:
    _, theirs = _pair()
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(b"\x93\x00\x01\xa4ping" + b"\x00" * TAG_BYTES), 0)
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(b"short"), 0)


def test_large_frames_open_into_a_kept_buffer() -> None:
    mine, theirs = _pair()
    body = bytes(range(256)) * 1024  # 256 KiB
    for _ in range(3):
        sealed = b"".join(mine.sealer.seal(b"HDR!", body))
        assert bytes(theirs.opener.open(memoryview(sealed[4:]), 1 << 20)) == body


def test_integrity_only_when_both_sides_turn_encryption_off() -> None:
    mine, theirs = shake(
        ClientHandshake(SECRET, "c", encrypt=False), ServerHandshake(SECRET, "c", encrypt=False)
    )
    assert not mine.encrypted and not theirs.encrypted
    sealed = b"".join(mine.sealer.seal(b"HDR!", b"clear text page"))
    assert b"clear text page" in sealed  # readable, but not changeable:
    assert bytes(theirs.opener.open(memoryview(sealed[4:]), 0)) == b"clear text page"
    tampered = b"".join(mine.sealer.seal(b"HDR!", b"clear text page"))[4:]
    with pytest.raises(IntegrityError):
        theirs.opener.open(memoryview(tampered.replace(b"clear", b"CLEAR")), 0)


@pytest.mark.parametrize(("client", "server"), [(True, False), (False, True)])
def test_one_side_asking_for_encryption_is_enough(client: bool, server: bool) -> None:
    mine, theirs = shake(
        ClientHandshake(SECRET, "c", encrypt=client), ServerHandshake(SECRET, "c", encrypt=server)
    )
    assert mine.encrypted and theirs.encrypted


def test_a_downgrade_by_a_man_in_the_middle_fails() -> None:
    client = ClientHandshake(SECRET, "c", encrypt=True)
    server = ServerHandshake(SECRET, "c", encrypt=False)
    hello = client.hello()
    hello[7] = False  # the relay asks for a clear session on the client's behalf
    with pytest.raises(AuthError):
        client.challenge(server.hello(hello))


@pytest.mark.parametrize(
    ("identity", "change"),
    [
        (Identity.client(), {4: "node", 5: "a", 6: "1-a"}),
        (NODE_A, {5: "b"}),
        (NODE_A, {6: "2-a"}),
    ],
    ids=["role", "node", "incarnation"],
)
def test_a_relay_cannot_change_who_the_client_is(
    identity: Identity, change: dict[int, str]
) -> None:
    client = ClientHandshake(SECRET, "c", identity)
    hello = client.hello()
    for index, value in change.items():
        hello[index] = value
    server = ServerHandshake(SECRET, "c")
    with pytest.raises(AuthError):
        client.challenge(server.hello(hello))


def test_a_relay_cannot_change_who_the_server_is() -> None:
    client = ClientHandshake(SECRET, "c")
    challenge = ServerHandshake(SECRET, "c", NODE_B).hello(client.hello())
    challenge[3] = "a"
    with pytest.raises(AuthError):
        client.challenge(challenge)


def test_wrong_secret_fails_on_both_sides() -> None:
    client = ClientHandshake(OTHER, "c")
    server = ServerHandshake(SECRET, "c")
    with pytest.raises(AuthError):
        client.challenge(server.hello(client.hello()))
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
    # An eavesdropper replays hello and auth to a new server: its fresh nonce breaks the proof.
    second = ServerHandshake(SECRET, "c")
    second.hello(hello)
    with pytest.raises(AuthError):
        second.auth(auth)


def test_replayed_challenge_fails_at_the_client() -> None:
    old_client = ClientHandshake(SECRET, "c")
    challenge = ServerHandshake(SECRET, "c").hello(old_client.hello())
    with pytest.raises(AuthError):
        ClientHandshake(SECRET, "c").challenge(challenge)


def test_reflected_server_proof_is_not_a_client_proof() -> None:
    server = ServerHandshake(SECRET, "c")
    challenge = server.hello(ClientHandshake(SECRET, "c").hello())
    with pytest.raises(AuthError):
        server.auth([challenge[6]])


def test_reflected_nonce_is_refused() -> None:
    server = ServerHandshake(SECRET, "c", nonce=b"n" * 32)
    hello = ClientHandshake(SECRET, "c", nonce=b"n" * 32).hello()
    with pytest.raises(AuthError):
        server.hello(hello)


def test_other_cluster_and_version_are_refused() -> None:
    with pytest.raises(AuthError):
        ServerHandshake(SECRET, "c").hello(ClientHandshake(SECRET, "d").hello())
    with pytest.raises(VersionMismatch):
        ServerHandshake(SECRET, "c").hello([1, "c", b"n" * 32])
    challenge = ServerHandshake(SECRET, "c").hello(ClientHandshake(SECRET, "c").hello())
    challenge[0] = PROTOCOL_VERSION + 1
    with pytest.raises(VersionMismatch):
        ClientHandshake(SECRET, "c").challenge(challenge)


def test_the_client_secret_makes_clients_only() -> None:
    server = ServerHandshake(SECRET, "c", client_secret=CLIENT_SECRET)
    _, theirs = shake(ClientHandshake(CLIENT_SECRET, "c"), server)
    assert theirs.peer.role is Role.CLIENT
    # The cluster secret still makes a client too.
    server = ServerHandshake(SECRET, "c", client_secret=CLIENT_SECRET)
    shake(ClientHandshake(SECRET, "c"), server)
    # A node identity with a client secret is refused before anything is sent...
    with pytest.raises(ValueError, match="cluster secret"):
        ClientHandshake(CLIENT_SECRET, "c", NODE_A)
    # ...and by the server when someone crafts it.
    hello = ClientHandshake(SECRET, "c", NODE_A).hello()
    hello[3] = "client"
    with pytest.raises(AuthError, match="cluster secret"):
        ServerHandshake(SECRET, "c", client_secret=CLIENT_SECRET).hello(hello)


def test_a_client_secret_is_refused_where_none_is_configured() -> None:
    with pytest.raises(AuthError, match="no client secret"):
        ServerHandshake(SECRET, "c").hello(ClientHandshake(CLIENT_SECRET, "c").hello())


def test_the_client_secret_does_not_pass_for_the_cluster_secret() -> None:
    client = ClientHandshake(Secret(CLIENT_SECRET.value), "c")  # claims to hold the cluster's
    server = ServerHandshake(SECRET, "c", client_secret=CLIENT_SECRET)
    with pytest.raises(AuthError):
        client.challenge(server.hello(client.hello()))


@pytest.mark.parametrize(
    "hello",
    [
        [],
        [PROTOCOL_VERSION, "c"],
        [PROTOCOL_VERSION, "c", b"short", "cluster", "client", "", "", True],
        [PROTOCOL_VERSION, 2, b"n" * 32, "cluster", "client", "", "", True],
        ["2", "c", b"n" * 32, "cluster", "client", "", "", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "other", "client", "", "", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "cluster", "admin", "", "", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "cluster", "client", "x", "", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "cluster", "node", "", "", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "cluster", "node", "a" * 200, "1", True],
        [PROTOCOL_VERSION, "c", b"n" * 32, "cluster", "client", "", "", 1],
    ],
)
def test_malformed_hello(hello: list[object]) -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake(SECRET, "c").hello(hello)


def test_out_of_order_steps() -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake(SECRET, "c").auth([b"x" * 32])
    with pytest.raises(ProtocolError):
        ClientHandshake(SECRET, "c").ready([])


def test_identities_are_checked() -> None:
    with pytest.raises(ValueError, match="node id"):
        Identity.node("", "1")
    with pytest.raises(ValueError, match="no node"):
        Identity(Role.CLIENT, NodeId("a"))
    with pytest.raises(ValueError, match="bytes"):
        Identity.node("é" * 100, "1")


def test_load_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"from-a-file-0123456789\n")
    path.chmod(0o600)
    assert load_secret(path).value == b"from-a-file-0123456789"
    assert load_secret(path, kind=KeyKind.CLIENT).kind is KeyKind.CLIENT
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
