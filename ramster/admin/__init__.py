"""The HTTP admin API (aiohttp; the only package that imports it): JSON under /v1, /metrics,
an OpenAPI document and the live dashboard. It reads and acts on its node through
`admin.source` only; `admin.server.AdminServer` is what a node starts when the API is on."""
