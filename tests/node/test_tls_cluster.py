"""Three real nodes over TLS and over mutual TLS, benched through the `ramster bench` command;
a node with a certificate from another CA is refused by every member (and refuses them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ramster.rpc import RpcConfig
from ramster.testing.cluster import Cluster
from tests.conftest import ClusterFactory, run_ramster
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ("node", "program"))


def _tls_args(pki: Pki, mutual: bool, leaf: tuple[Path, Path] | None = None) -> list[str]:
    cert, key = leaf or pki.leaves["node"]
    args = [f"--tls-cert={cert}", f"--tls-key={key}", f"--tls-ca={pki.ca}"]
    return args if mutual else [*args, "--no-tls-client-auth"]


def _bench(c: Cluster, pki: Pki, program_cert: bool) -> tuple[int, str]:
    secret = c.tmp / "secret"
    args = ["bench", "--node", c.nodes[0].address, "--secret-file", str(secret),
            "--cluster", c.name, "--tls-ca", str(pki.ca), "--mib", "8"]  # fmt: skip
    if program_cert:
        cert, key = pki.leaves["program"]
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    out = run_ramster(*args, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.asyncio
@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
async def test_a_three_node_cluster_over_tls(
    cluster_factory: ClusterFactory, pki: Pki, mutual: bool
) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB", extra=_tls_args(pki, mutual))
    cert, key = pki.leaves["program"]
    c.rpc = RpcConfig(cluster=c.name, tls_ca=pki.ca, tls_cert=cert, tls_key=key)
    await c.start_all()
    code, out = _bench(c, pki, program_cert=mutual)
    assert code == 0, out
    assert "0 wrong, 0 missing" in out
    st = await c.stats(0)
    assert st["pool"]["remote_pages"] > 0  # pages crossed TLS to the holders
    assert all(p["alive"] for p in st["peers"])
    log = c.nodes[0].log.read_text()
    assert ("mutual TLS" if mutual else "AES-256-GCM), TLS") in log
    if mutual:
        # A program with only the CA has no certificate to show: TLS 1.3 lets it finish its
        # side, then the node's alert ends the connection before our handshake.
        code, out = _bench(c, pki, program_cert=False)
        assert code != 0
        assert "TLS" in out or "lost" in out, out


@pytest.mark.asyncio
async def test_a_node_with_a_certificate_from_another_ca_is_refused(
    cluster_factory: ClusterFactory, pki: Pki
) -> None:
    c = cluster_factory(4, extra=_tls_args(pki, mutual=True))
    cert, key = pki.leaves["program"]
    c.rpc = RpcConfig(cluster=c.name, tls_ca=pki.ca, tls_cert=cert, tls_key=key)
    # n3 knows the cluster secret and trusts the cluster CA, but its own certificate is a
    # stranger's.
    stranger = c.nodes[3]
    good = _tls_args(pki, mutual=True)
    stranger.args = [a for a in stranger.args if a not in good]
    stranger.args += _tls_args(pki, mutual=True, leaf=pki.stranger)
    for i in range(3):
        c.start(i)
    await c.wait_ready([0, 1, 2])
    c.start(3)
    await asyncio.sleep(3)
    for i in range(3):
        st = await c.stats(i)
        assert "n3" not in {p["node"] for p in st["peers"] if p["alive"]}
        assert st["rpc"]["handshakes"] >= 1  # its members (and the test) do get in
    # And the stranger reached nobody: the members refuse its certificate (its log says so).
    log = stranger.log.read_text()
    assert "connecting to" in log and "failed" in log
    assert "is alive" not in log
