"""TLS from certificate, key and CA files; mutual TLS when the server is given a CA."""

from __future__ import annotations

import dataclasses

import pytest

from ramster.errors import AuthError, RpcError
from ramster.rpc import Keys, PageBatch, RpcClient, RpcConfig, RpcServer
from ramster.rpc.testing import DictPageStore
from tests.pki import Pki, make_pki
from tests.rpc.conftest import FAST, SECRET


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _config(pki: Pki, *, cert: bool = True, ca: bool = True, rogue: bool = False) -> RpcConfig:
    return dataclasses.replace(
        FAST,
        tls_cert=(pki.other_cert if rogue else pki.node_cert) if cert else None,
        tls_key=(pki.other_key if rogue else pki.node_key) if cert else None,
        tls_ca=pki.ca if ca else None,
    )


@pytest.mark.asyncio
async def test_mutual_tls_round_trip(pki: Pki) -> None:
    server = RpcServer(SECRET, _config(pki))
    server.register_pages(DictPageStore())
    await server.start()
    client = RpcClient("127.0.0.1", server.port, SECRET, _config(pki))
    try:
        batch = PageBatch.of((0, i, 1, 0, bytes([i]) * 4096) for i in range(64))
        assert await client.put_pages(batch) == [True] * 64
        got = await client.get_pages(Keys.of((0, i) for i in range(64)))
        assert [bytes(p) for p in got.payloads] == [bytes(p) for p in batch.payloads]
        transport = client._conns[0]._transport
        assert transport is not None
        assert transport.get_extra_info("ssl_object") is not None
    finally:
        await client.close()
        await server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "client_kind", ["no-certificate", "certificate-from-another-ca", "plain-tcp"]
)
async def test_mutual_tls_refuses_peers_without_a_cluster_certificate(
    pki: Pki, client_kind: str
) -> None:
    server = RpcServer(SECRET, _config(pki))
    await server.start()
    config = {
        "no-certificate": _config(pki, cert=False),
        "certificate-from-another-ca": _config(pki, rogue=True),
        "plain-tcp": FAST,
    }[client_kind]
    bad = RpcClient("127.0.0.1", server.port, SECRET, config)
    good = RpcClient("127.0.0.1", server.port, SECRET, _config(pki))
    try:
        with pytest.raises(RpcError):
            await bad.ping()
        assert server.statistics().calls == 0
        await good.ping()
    finally:
        await bad.close()
        await good.close()
        await server.close()


@pytest.mark.asyncio
async def test_client_refuses_a_server_outside_its_ca(pki: Pki) -> None:
    server = RpcServer(SECRET, _config(pki, rogue=True, ca=False))
    await server.start()
    client = RpcClient("127.0.0.1", server.port, SECRET, _config(pki))
    try:
        with pytest.raises(AuthError, match="TLS"):
            await client.ping()
        assert server.statistics().handshakes == 0
    finally:
        await client.close()
        await server.close()


def test_tls_config_is_validated(pki: Pki) -> None:
    with pytest.raises(ValueError, match="together"):
        RpcConfig(tls_cert=pki.node_cert)
    assert RpcConfig(tls_ca=pki.ca).tls
    assert not RpcConfig().tls


@pytest.mark.asyncio
async def test_tls_without_client_certificates(pki: Pki) -> None:
    config = dataclasses.replace(_config(pki), tls_client_auth=False)
    server = RpcServer(SECRET, config)
    await server.start()
    # A client with only the CA: it verifies the server, and proves the secret as always.
    client = RpcClient("127.0.0.1", server.port, SECRET, _config(pki, cert=False))
    try:
        await client.ping()
        assert server.statistics().handshakes == 1
    finally:
        await client.close()
        await server.close()
