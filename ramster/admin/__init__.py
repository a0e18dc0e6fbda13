"""The HTTP admin API (aiohttp; the only package that imports it): JSON under /v1, /metrics,
an OpenAPI document and the live dashboard."""

from ramster.admin.server import AdminServer, check_bind, is_loopback

__all__ = ["AdminServer", "check_bind", "is_loopback"]
