"""Node configuration: flags over RAMSTER_* variables over the TOML file; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramster.node.config import NodeConfig, load_config, new_incarnation, node_id_for
from ramster.pagestore.owners import incarnation_order
from ramster.settings import parse_address, parse_size


def test_precedence_flags_env_file(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        '[node]\nlisten = "127.0.0.1:9000"\nlocal_budget = "64MiB"\nreplicas = 3\n'
        'peers = ["127.0.0.1:9001"]\n'
    )
    env = {"RAMSTER_LOCAL_BUDGET": "32MiB", "RAMSTER_LENT_BUDGET": "1G"}
    cfg = load_config({"replicas": 1}, env=env, file=toml)
    assert cfg.listen == "127.0.0.1:9000"
    assert cfg.local_budget == 32 << 20  # env beats file
    assert cfg.lent_budget == 1 << 30
    assert cfg.replicas == 1  # flag beats file
    assert cfg.peers == ("127.0.0.1:9001",)
    assert cfg.port == 9000


def test_env_peers_are_comma_separated() -> None:
    cfg = load_config({}, env={"RAMSTER_PEERS": "a:1, b:2"})
    assert cfg.peers == ("a:1", "b:2")


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"replicas": 0}, "replicas"),
        ({"low_watermark": 0.9, "high_watermark": 0.8}, "watermarks"),
        ({"listen": "nowhere"}, "address"),
        ({"local_budget": "lots"}, "not a size"),
        ({"heartbeat": 5.0, "dead_after": 1.0}, "heartbeat"),
        ({"log_level": "loud"}, "log level"),
    ],
)
def test_bad_settings_are_refused_clearly(flags: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(flags, env={})


def test_unknown_file_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text("[node]\nlocal_budgte = 5\n")
    with pytest.raises(ValueError, match="local_budgte"):
        load_config({}, env={}, file=toml)


def test_node_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    cfg = NodeConfig(state_dir=tmp_path / "state")
    first = node_id_for(cfg)
    assert first.startswith("node-")
    assert node_id_for(cfg) == first
    assert node_id_for(NodeConfig(node_id="given", state_dir=tmp_path)) == "given"


def test_incarnations_sort_by_start_time() -> None:
    a = new_incarnation()
    b = new_incarnation()
    assert a != b
    assert incarnation_order(a) <= incarnation_order(b)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("64KiB", 64 << 10),
        ("256MiB", 256 << 20),
        ("1G", 1 << 30),
        ("1.5GiB", 3 << 29),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_addresses() -> None:
    assert parse_address("10.0.0.1:7070") == ("10.0.0.1", 7070)
    assert parse_address(":7070") == ("127.0.0.1", 7070)
    assert parse_address("[::1]:7070") == ("::1", 7070)
    with pytest.raises(ValueError, match="port"):
        parse_address("host:99999")


def test_security_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        '[node]\ntls_cert = "/etc/r/node.pem"\ntls_key = "/etc/r/node.key"\n'
        'tls_ca = "/etc/r/ca.pem"\nclient_secret_file = "/etc/r/client.secret"\n'
    )
    env = {"RAMSTER_ENCRYPT": "false", "RAMSTER_TLS_CLIENT_AUTH": "no", "RAMSTER_MAX_DIALS": "2"}
    cfg = load_config({"test_hooks": True, "admin_read_token": True}, env=env, file=toml)
    assert cfg.tls_cert == Path("/etc/r/node.pem") and cfg.tls_ca == Path("/etc/r/ca.pem")
    assert cfg.client_secret_file == Path("/etc/r/client.secret")
    assert not cfg.encrypt and not cfg.tls_client_auth and cfg.test_hooks
    assert cfg.admin_read_token is True and cfg.max_dials == 2
    rpc = cfg.rpc_config()
    assert rpc.tls and not rpc.encrypt and not rpc.tls_client_auth
    assert NodeConfig().encrypt and not NodeConfig().test_hooks  # the defaults


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"tls_cert": "/x.pem"}, "together"),
        ({"tls_ca": "/ca.pem"}, "needs its own"),
        ({"max_dials": 0}, "max_dials"),
        ({"encrypt": "maybe"}, "yes/no"),
    ],
)
def test_security_settings_are_validated(flags: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(flags, env={})


def test_the_client_secret_comes_from_its_file_or_the_environment(tmp_path: Path) -> None:
    from ramster.rpc import KeyKind

    assert NodeConfig().client_secret(env={}) is None
    from_env = NodeConfig().client_secret(env={"RAMSTER_CLIENT_SECRET": "c" * 20})
    assert from_env is not None and from_env.kind is KeyKind.CLIENT
    path = tmp_path / "client.secret"
    path.write_text("d" * 24 + "\n")
    path.chmod(0o600)
    from_file = NodeConfig(client_secret_file=path).client_secret(env={})
    assert from_file is not None and from_file.value == b"d" * 24


def test_a_run_locks_its_state_dir_and_names_the_run_before(tmp_path: Path) -> None:
    import os

    from ramster.node.config import NodeConfig, claim_run

    config = NodeConfig(state_dir=tmp_path)
    fd, previous = claim_run(config, "n0", "1-a")
    assert fd is not None and previous is None
    assert claim_run(config, "n0", "2-b") == (None, None)  # held by a live run: no claim
    os.close(fd)  # the first run dies
    fd2, previous = claim_run(config, "n0", "2-b")
    assert fd2 is not None and previous == "1-a"
    os.close(fd2)
