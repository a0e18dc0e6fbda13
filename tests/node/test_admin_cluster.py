"""The admin API and its CLI against real node processes: the cluster view from any node, the
commands' --json output and exit codes, and a schemathesis run against the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ramster.testing import corpus
from ramster.testing.wait import wait_until
from tests.conftest import ClusterFactory, run_ramster
from tests.node.test_node import store_all


def ramster(*args: str, token: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMSTER_ADMIN")}
    if token is not None:
        env["RAMSTER_ADMIN_TOKEN_FILE"] = str(token)
    return run_ramster(*args, env=env, timeout=60)


@pytest.mark.asyncio
async def test_status_nodes_events_and_rebalance_from_any_node(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, local_budget="1MiB", lent_budget="16MiB")
    await c.start_all()
    async with c.client(0) as client:
        assert all(await store_all(client, corpus.pages(1500, seed=4)))
    admin = await c.admin_url(1)  # a member, not the coordinator
    token = c.tmp / "admin.token"

    def status() -> dict[str, Any]:
        out = ramster("status", "--admin", admin, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def copies_counted() -> bool:
        # Every copy n0 says it keeps on a holder is counted there.
        st = status()
        held = st["pages"].get("n0", {})
        return bool(held) and sum(m["lent_pages"] for m in st["members"]) == sum(held.values())

    def state_of(node: str) -> str:
        return str({m["node"]: m["state"] for m in status()["members"]}[node])

    await wait_until(copies_counted, 15, "copies counted")
    st = status()
    assert st["answered_by"] == "n1" and st["coordinator"] == "n0"
    members = {m["node"]: m for m in st["members"]}
    assert set(members) == {"n0", "n1", "n2"}
    assert all(m["state"] == "alive" for m in members.values())
    assert members["n0"]["role"] == "coordinator"
    assert set(st["pages"]["n0"]) == {"n1", "n2"}

    out = ramster("status", "--admin", admin)
    assert out.returncode == 0
    assert "coordinator n0" in out.stdout and "n2" in out.stdout
    nodes = json.loads(ramster("nodes", "--admin", admin, "--json").stdout)
    assert [m["node"] for m in nodes] == ["n0", "n1", "n2"]

    assert ramster("rebalance", "--admin", admin).returncode == 2  # no token
    out = ramster("rebalance", "--admin", admin, "--json", token=token)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["coordinator"] == "n0"  # forwarded to the coordinator

    c.kill(2)
    await wait_until(lambda: state_of("n2") == "dead", 15, "n2 dead")
    out = ramster("events", "--admin", admin, "--json", "--limit", "200")
    events = [json.loads(line) for line in out.stdout.splitlines() if line]
    kinds = {(e["kind"], e["node"]) for e in events}
    assert ("peer-alive", "n0") in kinds and ("peer-dead", "n2") in kinds
    assert all(events[i]["id"] < events[i + 1]["id"] for i in range(len(events) - 1))


def test_an_unreachable_admin_api_is_one_clear_line() -> None:
    out = ramster("status", "--admin", "127.0.0.1:9")
    assert out.returncode == 3
    assert out.stderr.startswith("ramster: cannot reach the admin API at http://127.0.0.1:9")
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


@pytest.mark.asyncio
async def test_schemathesis_finds_nothing_wrong(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3, local_budget="1MiB", lent_budget="8MiB")
    await c.start_all()
    async with c.client(0) as client:
        assert all(await store_all(client, corpus.pages(500, seed=6)))
    admin = await c.admin_url(0)
    token = (c.tmp / "admin.token").read_text().strip()
    st = Path(sys.executable).parent / "schemathesis"
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        f"{admin}/v1/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--exclude-path",
        "/v1/events/stream",  # never ends by design; tested in tests/admin
        "--max-examples",
        "40",
        "--seed",
        "7",
        "--warnings",
        "off",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=c.tmp,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = output.decode()
    assert proc.returncode == 0, text[-4000:]
    assert " passed" in text and "failed" not in text.split("SUMMARY")[-1]


def test_a_node_refuses_a_public_admin_address_without_a_token(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    secret.chmod(0o600)
    out = ramster(
        "node",
        "--listen=127.0.0.1:0",
        "--admin=0.0.0.0:0",
        f"--secret-file={secret}",
        f"--state-dir={tmp_path}",
    )
    assert out.returncode == 2
    assert "refusing to serve the admin API on 0.0.0.0:0 without a token" in out.stderr
    assert "Traceback" not in out.stderr
