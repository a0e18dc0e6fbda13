"""The operator commands over the admin API: status, nodes, drain, rebalance, events.

Each prints a table (or `--json` for scripts) and returns an exit code: 0 done, 1 the call was
refused or failed, 2 bad usage (a token problem), 3 the admin API could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from ramster.admin.client import FAILED, OK, UNREACHABLE, CommandError, Target, call, stream
from ramster.cli.report import Progress, human_bytes, table
from ramster.rpc.loop import run


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
                last = await stream(target, last, show)
            except CommandError as exc:
                if exc.code != UNREACHABLE:
                    raise
                print(f"ramster: {exc}; retrying", file=sys.stderr)
                await asyncio.sleep(2)
        return OK

    return _run(go())


def _capacity(e: dict[str, Any]) -> str:
    if "capacity_bytes" not in e:
        return "-"
    return human_bytes(e["capacity_bytes"]) + ("" if e.get("fits", True) else " !")


def exports_table(view: dict[str, Any]) -> str:
    """`/v1/exports` as the table `export list` prints, with a note under it for each export
    that cannot fit in what the cluster can hold for it (marked `!`)."""
    served = {e["name"]: e for e in view["served"]}
    held = {e["name"]: e for e in view["held"]}
    names = sorted(set(view["servers"]) | set(held))
    if not names:
        return "no exports"
    lines = [
        f"{'EXPORT':<16} {'SERVER':<12} {'TERM':>5} {'DURABILITY':<11} {'STATE':<10} "
        f"{'SIZE':>10} {'CAPACITY':>12} {'PAGES':>9} {'UNDER-REPL':>10} {'LOST':>6} "
        f"{'HELD HERE':>9}"
    ]
    notes = []
    for name in names:
        e = served.get(name, {})
        heard = view["servers"].get(name, {})
        server = heard.get("server") or held.get(name, {}).get("server") or "-"
        term = heard.get("term") or held.get(name, {}).get("term") or 0
        size = human_bytes(e["size"]) if "size" in e else "-"
        lines.append(
            f"{name:<16} {server:<12} {term:>5} {e.get('durability', '-'):<11} "
            f"{e.get('state', 'serving' if heard else '-'):<10} "
            f"{size:>10} {_capacity(e):>12} "
            f"{e.get('pages', '-'):>9} {e.get('under_replicated', '-'):>10} "
            f"{e.get('pages_lost', '-'):>6} {held.get(name, {}).get('pages_here', 0):>9}"
        )
        if e.get("fits") is False:
            room = human_bytes(e["capacity_bytes"])
            notes.append(
                f"! {name}: {size} does not fit in the {room} the cluster can hold for it "
                f"(live holders' lent budgets over R={e.get('replicas', '?')}): writes past "
                "that get ENOSPC"
            )
    return "\n".join(lines + notes)


def export_list(target: Target, as_json: bool) -> int:
    """Every export the node knows: served here, heard of from the members, held here."""

    async def go() -> int:
        view = await call(target, "GET", "/v1/exports")
        print(json.dumps(view) if as_json else exports_table(view))
        return OK

    return _run(go())


def export_move(target: Target, name: str, to: str, as_json: bool, force: bool = False) -> int:
    """Serve an export from another node (the old server is fenced); refused unless the new
    server hears every member, the current server among them, or `force`."""

    async def go() -> int:
        if not as_json:
            print(f"moving {name} to {to}: it takes the next term and rebuilds ...", flush=True)
        body: dict[str, object] = {"to": to, "force": True} if force else {"to": to}
        answer = await call(target, "POST", f"/v1/exports/{name}/move", body, within=150)
        if as_json:
            print(json.dumps(answer))
        elif answer.get("state") == "waiting":
            print(answer["detail"])
        else:
            print(f"{name} is served by {answer['server']} now (term {answer['term']})")
        return FAILED if answer.get("state") == "waiting" else OK

    return _run(go())


def export_delete(target: Target, name: str, as_json: bool) -> int:
    """Delete an export cluster-wide."""

    async def go() -> int:
        answer = await call(target, "DELETE", f"/v1/exports/{name}", within=60)
        if as_json:
            print(json.dumps(answer))
        else:
            print(f"{name} deleted: {answer['dropped_pages']:,} pages dropped")
        return OK

    return _run(go())
