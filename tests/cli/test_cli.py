"""The `ramster` command as a user runs it: a real process."""

from __future__ import annotations

from ramster._version import __version__
from tests.conftest import run_ramster

ramster = run_ramster


def test_version() -> None:
    out = ramster("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"ramster {__version__}"


def test_help_lists_commands_and_units() -> None:
    out = ramster("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout
    demo = ramster("demo", "--help")
    assert "MiB" in demo.stdout


def test_demo_round_trips_the_corpus() -> None:
    out = ramster("demo", "--mib", "4")
    assert out.returncode == 0, out.stderr
    assert "compression ratio" in out.stdout
    assert "1,024 ok, 0 bad" in out.stdout


def test_demo_with_a_small_budget_refuses_but_stays_correct() -> None:
    out = ramster("demo", "--mib", "8", "--budget-mib", "1")
    assert out.returncode == 0, out.stderr
    refused = next(line for line in out.stdout.splitlines() if line.startswith("refused"))
    assert int(refused.split()[-1].replace(",", "")) > 0


def test_bad_arguments_give_a_clear_error() -> None:
    out = ramster("demo", "--mib", "-3")
    assert out.returncode == 2
    assert "positive" in out.stderr
    out = ramster("demo", "--page-size", "1000")
    assert out.returncode == 2
    assert "power of two" in out.stderr
    assert "Traceback" not in out.stderr


def test_node_help_shows_the_security_options() -> None:
    out = ramster("node", "--help")
    assert out.returncode == 0
    for flag in ("--client-secret-file", "--no-encryption", "--tls-cert", "--tls-key",
                 "--tls-ca", "--no-tls-client-auth", "--test-hooks", "--admin-read-token",
                 "--max-dials"):  # fmt: skip
        assert flag in out.stdout, flag
    stats = ramster("stats", "--help")
    for flag in ("--client-secret-file", "--tls-ca", "--tls-cert", "--cluster"):
        assert flag in stats.stdout, flag
