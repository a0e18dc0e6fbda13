"""NBD settings: export specs, allow-lists, and the NBD fields of the node's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramster.nbd.config import ExportSpec, NbdConfig, allowed, parse_allow, parse_exports
from ramster.node.config import load_config


def test_exports_take_areas_from_the_top_unless_given() -> None:
    specs = parse_exports(["swap0:8GiB", "b:1G:31", "c:4096", "d:1.5GiB"])
    assert specs == (
        ExportSpec("swap0", 8 << 30, 30),
        ExportSpec("b", 1 << 30, 31),
        ExportSpec("c", 4096, 29),
        ExportSpec("d", 3 << 29, 28),
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("swap0", "NAME:SIZE"),
        ("swap0:8GiB:1:2", "NAME:SIZE"),
        ("swap0:lots", "not a size"),
        ("swap0:0", "positive multiple"),
        ("swap0:6000", "multiple of 4096"),
        ("swap0:17TiB", "16TiB"),
        (":8GiB", "export name"),
        ("-x:8GiB", "export name"),
        ("a" * 65 + ":8GiB", "export name"),
        ("swap0:8GiB:32", "area"),
        ("swap0:8GiB:x", "no area number nor durability"),
    ],
)
def test_bad_exports_are_refused_clearly(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_exports([text])


def test_allow_lists_and_client_addresses() -> None:
    nets = parse_allow(["127.0.0.1,10.0.0.0/8", "::1"])
    assert allowed("127.0.0.1", nets) and allowed("10.200.1.2", nets) and allowed("::1", nets)
    assert allowed("::ffff:10.1.2.3", nets)  # a dual-stack socket's view of an IPv4 client
    assert not allowed("127.0.0.2", nets) and not allowed("192.168.1.1", nets)
    assert not allowed("not an address", nets)
    with pytest.raises(ValueError, match="not an address"):
        parse_allow(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="empty"):
        parse_allow([" , "])


def test_nbd_config_checks_names_areas_and_limits() -> None:
    with pytest.raises(ValueError, match="at least one export"):
        NbdConfig(exports=())
    with pytest.raises(ValueError, match="distinct"):
        NbdConfig(exports=parse_exports(["a:1G", "a:2G"]))
    with pytest.raises(ValueError, match="share a frontswap area"):
        NbdConfig(exports=parse_exports(["a:1G:3", "b:1G:3"]))
    with pytest.raises(ValueError, match="max_queued_bytes"):
        NbdConfig(exports=parse_exports(["a:1G"]), max_queued_bytes=1 << 20)
    config = NbdConfig(exports=parse_exports(["a:1G", "b:2G"]))
    assert config.export("") == config.exports[0]
    assert config.export("b") == config.exports[1] and config.export("c") is None


def test_node_config_nbd_fields_from_flags_env_and_file(tmp_path: Path) -> None:
    assert load_config({}, env={}).nbd is None
    toml = tmp_path / "node.toml"
    toml.write_text('[node]\nnbd = "0.0.0.0:10809"\nnbd_exports = ["swap0:8GiB"]\n')
    config = load_config(
        {},
        env={"RAMSTER_NBD_ALLOW": "10.0.0.0/8,127.0.0.1", "RAMSTER_NBD_SWAP_SAFETY": "no"},
        file=toml,
    )
    nbd = config.nbd_config()
    assert nbd.listen == "0.0.0.0:10809"
    assert nbd.exports == (ExportSpec("swap0", 8 << 30, 31, "replicated"),)
    assert nbd.allow == ("10.0.0.0/8", "127.0.0.1")
    assert nbd.swap_safety is False
    flags = {"nbd": "127.0.0.1:0", "nbd_exports": ("a:1GiB", "b:2GiB")}
    assert [e.name for e in load_config(flags, env={}).nbd_config().exports] == ["a", "b"]


@pytest.mark.parametrize(
    ("flags", "env", "match"),
    [
        ({"nbd_exports": ("a:1G",)}, {}, "--nbd HOST:PORT"),
        ({"nbd": "127.0.0.1:10809", "nbd_exports": ("a:1G:fast",)}, {}, "durability"),
        ({"nbd": "127.0.0.1:10809", "nbd_exports": ("a:1000",)}, {}, "multiple of 4096"),
        ({}, {"RAMSTER_NBD_SWAP_SAFETY": "maybe"}, "yes/no"),
        ({"nbd": "here", "nbd_exports": ("a:1G",)}, {}, "host:port"),
    ],
)
def test_bad_node_nbd_settings(flags: dict[str, object], env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(flags, env=env)


def test_an_export_may_ask_to_be_refused_unless_it_fits() -> None:
    specs = parse_exports(["a:1G:must-fit", "b:1G:7:replicated:must-fit", "c:1G"], "replicated")
    assert specs == (
        ExportSpec("a", 1 << 30, 31, "replicated", must_fit=True),
        ExportSpec("b", 1 << 30, 7, "replicated", must_fit=True),
        ExportSpec("c", 1 << 30, 30, "replicated"),
    )
    with pytest.raises(ValueError, match="must-fit is for replicated exports"):
        parse_exports(["a:1G:must-fit"])  # `ramster nbd`'s exports are local
    with pytest.raises(ValueError, match="must-fit is for replicated exports"):
        parse_exports(["a:1G:local:must-fit"], "replicated")
    with pytest.raises(ValueError, match="not a size: 'must-fit'"):
        parse_exports(["a:must-fit"], "replicated")


def test_the_node_refuses_oversized_exports_from_a_flag_a_variable_or_the_file(
    tmp_path: Path,
) -> None:
    from ramster.cli.main import build_parser
    from ramster.cli.options import given

    assert load_config({}, env={}).refuse_oversized_exports is False
    args = build_parser().parse_args(["node", "--refuse-oversized-exports"])
    assert load_config(given(args), env={}).refuse_oversized_exports is True
    assert build_parser().parse_args(["node"]).refuse_oversized_exports is None  # not given
    env = {"RAMSTER_REFUSE_OVERSIZED_EXPORTS": "yes"}
    assert load_config({}, env=env).refuse_oversized_exports is True
    toml = tmp_path / "node.toml"
    toml.write_text("[node]\nrefuse_oversized_exports = true\n")
    assert load_config({}, env={}, file=toml).refuse_oversized_exports is True
    env = {"RAMSTER_REFUSE_OVERSIZED_EXPORTS": "no"}
    assert load_config({}, env=env, file=toml).refuse_oversized_exports is False
    with pytest.raises(ValueError, match="yes/no"):
        load_config({}, env={"RAMSTER_REFUSE_OVERSIZED_EXPORTS": "maybe"})
