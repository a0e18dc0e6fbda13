"""A client of a node's admin API over HTTP, for the operator commands (the CLI renders what
it returns). Failures carry the exit code they mean: 1 refused or failed, 2 a token problem,
3 the API could not be reached."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

DEFAULT_ADMIN = "http://127.0.0.1:7171"
TIMEOUT = aiohttp.ClientTimeout(total=10)
OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CommandError(Exception):
    """A call that failed, with the exit code it means."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Target:
    """Which admin API to talk to, and with which token."""

    url: str
    token: str | None

    @classmethod
    def from_args(cls, url: str | None, token_file: Path | None) -> Target:
        """From flags, else $RAMSTER_ADMIN and $RAMSTER_ADMIN_TOKEN(_FILE)."""
        url = url or os.environ.get("RAMSTER_ADMIN") or DEFAULT_ADMIN
        if "://" not in url:
            url = f"http://{url}"
        env_file = os.environ.get("RAMSTER_ADMIN_TOKEN_FILE")
        path = token_file or (Path(env_file) if env_file else None)
        token = path.read_text().strip() if path else os.environ.get("RAMSTER_ADMIN_TOKEN")
        return cls(url.rstrip("/"), token or None)


async def call(
    target: Target, method: str, path: str, body: Any = None, within: float | None = None
) -> Any:
    """One request (with a JSON body, when given); the JSON answer, or CommandError with the
    right exit code. `within`: seconds to wait (default 10)."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    timeout = TIMEOUT if within is None else aiohttp.ClientTimeout(total=within)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, target.url + path, headers=headers, json=body) as r,
        ):
            body = await r.json(content_type=None)
            if r.status < 400:
                return body
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CommandError(
            UNREACHABLE, f"cannot reach the admin API at {target.url}: {reason}"
        ) from None
    except ValueError:
        raise CommandError(FAILED, f"{target.url}{path} did not answer JSON") from None
    error = body.get("error", {}) if isinstance(body, dict) else {}
    code = USAGE if r.status in (401, 403) else FAILED
    raise CommandError(code, f"{error.get('code', r.status)}: {error.get('message', '')}")


async def stream(target: Target, after: int, show: Callable[[dict[str, Any]], None]) -> int:
    """Follow the SSE event stream from `after`, handing each event to `show`; the last id
    seen when the stream ends."""
    url = f"{target.url}/v1/events/stream?after={after}"
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=5)) as session,
            session.get(url, headers=headers) as r,
        ):
            if r.status != 200:
                raise CommandError(FAILED, f"event stream answered HTTP {r.status}")
            async for raw in r.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    show(event)
                    after = event["id"]
    except (aiohttp.ClientError, OSError) as exc:
        raise CommandError(UNREACHABLE, f"event stream from {target.url} lost: {exc}") from None
    return after
