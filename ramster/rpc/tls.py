"""TLS contexts from certificate, key and CA files; mutual TLS when a CA is given (unless
client authentication is turned off: then only servers prove themselves)."""

from __future__ import annotations

import ssl

from ramster.rpc.config import RpcConfig


def server_context(config: RpcConfig) -> ssl.SSLContext | None:
    """The listening side's context, or None without TLS."""
    if not config.tls:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ValueError("a TLS server needs tls_cert and tls_key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_ca is not None and config.tls_client_auth:
        ctx.load_verify_locations(cafile=config.tls_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(config: RpcConfig) -> ssl.SSLContext | None:
    """The calling side's context, or None without TLS."""
    if not config.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls_ca is not None:
        # Peers are dialled by address, not name: with a cluster CA, a certificate it signed
        # is the identity (and the HMAC handshake still has to pass on top of it).
        ctx.check_hostname = False
    if config.tls_cert is not None and config.tls_key is not None:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx
