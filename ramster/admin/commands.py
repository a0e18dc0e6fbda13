"""The operator commands over the admin API: status, nodes, drain, rebalance, events.

Each prints a table (or `--json` for scripts) and returns an exit code: 0 done, 1 the call was
refused or failed, 2 bad usage (a token problem), 3 the admin API could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ramster.report import Progress, human_bytes, table
from ramster.rpc.loop import run

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


async def call(target: Target, method: str, path: str) -> Any:
    """One request; the JSON answer, or CommandError with the right exit code."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.request(method, target.url + path, headers=headers) as r,
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


def _run(coro: Any) -> int:
    try:
        result: int = run(coro)
    except CommandError as exc:
        print(f"ramster: {exc}", file=sys.stderr)
        return exc.code
    return result


def _pct(used: int | None, total: int | None) -> str:
    if not total:
        return "-"
    return f"{human_bytes(used or 0)} / {human_bytes(total)} ({100 * (used or 0) / total:.0f}%)"


def _members_table(cluster: dict[str, Any]) -> str:
    rows = []
    for m in cluster["members"]:
        lent_used = (m.get("lent_budget") or 0) - (m.get("lent_free") or 0)
        rows.append(
            [
                m["node"] + (" *" if m["role"] == "coordinator" else ""),
                m["state"] + (" (draining)" if m.get("draining") else ""),
                m["rpc"],
                _pct(m.get("local_used"), m.get("local_budget")),
                _pct(lent_used, m.get("lent_budget")),
                f"{m.get('lent_pages') or 0:,}",
                f"{m.get('under_replicated') or 0:,}",
            ]
        )
    return table(
        ["node", "state", "rpc", "local pool", "lent pool", "lent pages", "under-replicated"],
        rows,
    )


def status(target: Target, as_json: bool) -> int:
    """The cluster at a glance."""

    async def go() -> int:
        cluster = await call(target, "GET", "/v1/cluster")
        if as_json:
            print(json.dumps(cluster, indent=2))
            return OK
        alive = sum(1 for m in cluster["members"] if m["state"] == "alive")
        print(
            f"cluster {cluster['cluster']}: {len(cluster['members'])} members, {alive} alive; "
            f"coordinator {cluster['coordinator']} (term {cluster['term']}); "
            f"{cluster['under_replicated_pages']:,} pages under-replicated"
        )
        repairing = cluster["rebalance"]["repairing_pages"]
        if repairing:
            print(f"repairing {repairing:,} pages")
        print(_members_table(cluster))
        print("* coordinator")
        return OK

    return _run(go())


def nodes(target: Target, as_json: bool) -> int:
    """One line per member."""

    async def go() -> int:
        cluster = await call(target, "GET", "/v1/cluster")
        if as_json:
            print(json.dumps(cluster["members"], indent=2))
        else:
            print(_members_table(cluster))
        return OK

    return _run(go())


def rebalance(target: Target, as_json: bool) -> int:
    """Ask the coordinator to even out the holders now."""

    async def go() -> int:
        answer = await call(target, "POST", "/v1/rebalance")
        print(json.dumps(answer) if as_json else f"rebalance asked of {answer['coordinator']}")
        return OK

    return _run(go())


def drain(target: Target, node: str, timeout: float, as_json: bool) -> int:
    """Drain a node; a progress bar until it holds nothing, then 0."""

    async def go() -> int:
        await call(target, "POST", f"/v1/nodes/{node}/drain")
        deadline = time.monotonic() + timeout
        progress: Progress | None = None
        start: int | None = None
        shown = 0
        while True:
            cluster = await call(target, "GET", "/v1/cluster")
            member = next((m for m in cluster["members"] if m["node"] == node), None)
            if member is None or member["state"] == "dead":
                raise CommandError(FAILED, f"{node} is gone from the cluster before it drained")
            held = member.get("lent_pages") or 0
            if start is None:
                start = held
                if not as_json:
                    progress = Progress(f"draining {node}", max(held, 1), "pages")
            if progress is not None and start - held > shown:
                progress.advance(start - held - shown)
                shown = start - held
            if held == 0 and member.get("draining"):
                if progress is not None:
                    progress.close()
                    print(f"{node} holds nothing now and may stop")
                else:
                    print(json.dumps({"node": node, "drained": True, "moved_pages": start}))
                return OK
            if time.monotonic() > deadline:
                raise CommandError(FAILED, f"{node} still holds {held:,} pages after {timeout} s")
            await asyncio.sleep(0.5)

    return _run(go())


def events(target: Target, follow: bool, limit: int, as_json: bool) -> int:
    """Recent events; with follow, new ones as they happen (Ctrl-C ends)."""

    def show(e: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(e), flush=True)
            return
        when = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        print(f"{when}  {e['kind']:<20} {e['node']:<16} {e['detail']}", flush=True)

    async def go() -> int:
        recent = await call(target, "GET", f"/v1/events?limit={limit}")
        last = 0
        for e in recent["events"]:
            show(e)
            last = e["id"]
        while follow:
            try:
                last = await _stream(target, last, show)
            except CommandError as exc:
                if exc.code != UNREACHABLE:
                    raise
                print(f"ramster: {exc}; retrying", file=sys.stderr)
                await asyncio.sleep(2)
        return OK

    return _run(go())


async def _stream(target: Target, after: int, show: Any) -> int:
    """Follow the SSE stream from `after`; the last id seen when it ends."""
    url = f"{target.url}/v1/events/stream?after={after}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=5)) as session,
            session.get(url) as r,
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
