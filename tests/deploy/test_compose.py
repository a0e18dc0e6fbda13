"""deploy/ on the real Docker engine: the image built without a registry, the compose cluster up,
a bench through node 1 that spills, then node loss, a partition and a drain, checked after each.

The base image is debootstrapped once and kept (ramster-base:bookworm); the ramster image is
rebuilt from this checkout's wheels every run (seconds when only ramster changed). Everything
the compose project creates is removed afterwards, also on failure, and the test checks that
nothing is left. Set RAMSTER_E2E_BASE_IMAGE to build on another local base image.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ramster.client import SyncClient
from ramster.rpc import Secret, load_secret
from ramster.testing import corpus
from ramster.testing.cluster import free_port
from tests.deploy.compose import (
    DEPLOY,
    PROJECT_PREFIX,
    Project,
    build_images,
    compose_command,
    down,
    run,
    stale_projects,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

BASE_IMAGE = os.environ.get("RAMSTER_E2E_BASE_IMAGE", "ramster-base:bookworm")
IMAGE = "ramster:e2e"
UID = 10001
# Small budgets so that the bench spills and one holder's loss fills the others' lent pools to
# about three quarters; the memory limit is the budgets plus 128 MiB, as in the compose file.
LOCAL, LENT, MEM_LIMIT_MIB = "8MiB", "32MiB", 8 + 32 + 128
BENCH_MIB = 48
REPLICAS = 2
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def image(docker: None) -> str:
    TIMES.update(build_images(BASE_IMAGE, IMAGE))
    return IMAGE


@pytest.fixture
def project(image: str, tmp_path: Path) -> Iterator[Project]:
    compose = compose_command()
    assert compose is not None
    for stale in stale_projects():  # left by an earlier run that could not clean up
        down(compose, stale)
    secrets_dir = tmp_path / "secrets"
    run([str(DEPLOY / "make-secrets.sh"), str(secrets_dir)], env={"RAMSTER_IMAGE": image})
    env = {
        "RAMSTER_IMAGE": image,
        "RAMSTER_SECRETS_DIR": str(secrets_dir),
        "RAMSTER_ADMIN_PORT": str(free_port()),
        "RAMSTER_RPC_PORT": str(free_port()),
        "RAMSTER_LOCAL_BUDGET": LOCAL,
        "RAMSTER_LENT_BUDGET": LENT,
        "RAMSTER_MEM_LIMIT": f"{MEM_LIMIT_MIB}m",
        "RAMSTER_REPLICAS": str(REPLICAS),
        "RAMSTER_HEARTBEAT": "0.25",
        "RAMSTER_DEAD_AFTER": "1.5",
    }
    name = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}"
    token = (secrets_dir / "admin.token").read_text().strip()
    proj = Project(name, compose, env, load_secret(secrets_dir / "cluster.secret"), token)
    try:
        yield proj
    finally:
        proj.note_volumes()
        try:
            proj.down()
        finally:
            left = proj.leftovers()
            assert not left, f"left behind by `down`: {left}"


@dataclass(frozen=True)
class Verdict:
    """A check's answer with what it saw, for the failure message."""

    ok: bool
    facts: dict[str, Any]

    def __bool__(self) -> bool:
        return self.ok


class Nodes:
    """The cluster as the test sees it: node id -> RPC address, checks over all of them."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.rpc: dict[str, str] = {}
        self.cid: dict[str, str] = {}

    def add(self, service: str, cid: str | None = None) -> str:
        cid = cid or self.project.container(service)
        address = self.project.rpc(cid)
        node: str = wait_for(lambda: self.project.stats(address)["node"], 30, f"{service} answers")
        self.rpc[node] = address
        self.cid[node] = cid
        return node

    def remove(self, node: str) -> None:
        del self.rpc[node]
        del self.cid[node]

    def stats(self, node: str) -> dict[str, Any]:
        return self.project.stats(self.rpc[node])

    def one_cluster(self) -> Verdict:
        """Every node's admin API shows exactly these nodes alive, one coordinator and term."""
        views: dict[str, Any] = {}
        for node, cid in self.cid.items():
            cluster = self.project.admin(cid, "/v1/cluster")
            alive = sorted(m["node"] for m in cluster["members"] if m["state"] == "alive")
            views[node] = (alive, cluster["coordinator"], cluster["term"])
        expected = sorted(self.cid)
        ok = (
            all(v[0] == expected for v in views.values())
            and len({v[1:] for v in views.values()}) == 1
        )
        return Verdict(ok, views)

    def redundant(self, owner: str, strays_dropped: bool = True) -> Verdict:
        """The owner's remote pages have R copies each on live holders, and no stray copies
        (while a holder is dead, the owner keeps its copies' drops pending: `strays_dropped`)."""
        st = self.stats(owner)
        remote = int(st["pool"]["remote_pages"])
        held = {n: self.stats(n)["lent"]["stored_pages"] for n in self.rpc if n != owner}
        facts = {
            "remote": remote,
            "held": held,
            "under_replicated": st["under_replicated_pages"],
            "orphans_pending": st["orphans_pending"],
            "gone": st["gone_peers"],
        }
        ok = (
            remote > 0
            and st["under_replicated_pages"] == 0
            and (st["orphans_pending"] == 0 or not strays_dropped)
            and sum(held.values()) == REPLICAS * remote
        )
        return Verdict(ok, facts)

    def repaired_without(self, owner: str, gone: str) -> bool:
        """The owner counts `gone` as gone and has no page with fewer than R live copies."""
        st = self.stats(owner)
        return gone in st["gone_peers"] and st["under_replicated_pages"] == 0


def verify(address: str, secret: Secret, expected: list[bytes]) -> None:
    """Every acknowledged page loads back byte-identical through the owner."""
    lost = changed = 0
    with SyncClient(address, secret) as client:
        for start in range(0, len(expected), 512):
            offsets = list(range(start, min(len(expected), start + 512)))
            for off, page in zip(offsets, client.load_many(0, offsets), strict=True):
                if page is None:
                    lost += 1
                elif page != expected[off]:
                    changed += 1
    assert (lost, changed) == (0, 0), f"{lost} pages lost, {changed} changed"


def cli(*argv: str) -> str:
    """This checkout's `ramster` command on the host; its stdout."""
    return run([sys.executable, "-m", "ramster", *argv], timeout=60).stdout


def timed(name: str, started: float) -> None:
    TIMES[name] = round(time.monotonic() - started, 1)


def test_image_is_built_without_a_registry(image: str) -> None:
    config = json.loads(run(["docker", "image", "inspect", image]).stdout)[0]["Config"]
    assert config["User"] == "ramster"
    assert config["Entrypoint"] == ["ramster", "node"]
    assert "/opt/ramster/healthcheck.py" in config["Healthcheck"]["Test"]
    uid = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u"])
    assert uid.stdout.strip() == str(UID)
    version = run(["docker", "run", "--rm", "--network", "none", image, "--help"]).stdout
    assert "--secret-file" in version


def test_compose_cluster_survives_kill_partition_and_drain(project: Project) -> None:
    try:
        scenario(project)
    except BaseException:
        print(f"container logs:\n{project.logs()}")  # shown by pytest with the failure
        raise
    print(f"\ndeploy e2e ({' '.join(project.compose)}): {json.dumps(TIMES)}")


def scenario(project: Project) -> None:
    t_all = time.monotonic()
    env = project.env
    secret_values = [
        (Path(env["RAMSTER_SECRETS_DIR"]) / f).read_text().strip()
        for f in ("cluster.secret", "admin.token")
    ]

    # 1. Three nodes up; one cluster (mDNS on the bridge network), node1 coordinates.
    t0 = time.monotonic()
    project.run("up", "--detach", "--no-build")
    nodes = Nodes(project)
    for service in ("node1", "node2", "node3"):
        nodes.add(service)
    assert set(nodes.rpc) == {"node1", "node2", "node3"}
    wait_for(nodes.one_cluster, 60, "node1..3 form one cluster")
    timed("up_to_one_cluster_s", t0)
    # `ramster status` on this host, through node 1's admin port published on loopback.
    admin1 = f"http://127.0.0.1:{env['RAMSTER_ADMIN_PORT']}"
    # The node binds its admin API off loopback (in its container): reads need the token too.
    token = Path(env["RAMSTER_SECRETS_DIR"]) / "admin.token"
    status = json.loads(cli("status", "--admin", admin1, "--token-file", str(token), "--json"))
    assert status["coordinator"] == "node1"
    assert sorted(m["node"] for m in status["members"] if m["state"] == "alive") == sorted(
        nodes.cid
    )
    # The image's HEALTHCHECK asks /v1/health every 10 s.
    wait_for(
        lambda: {project.health(c) for c in nodes.cid.values()} == {"healthy"},
        60,
        "every container healthy",
    )
    timed("up_to_healthy_s", t0)

    # What the deployment promises: secrets never in the containers' configuration, node 1's
    # ports on loopback only and no other node's published, the image's user, memory limits.
    for node, cid in nodes.cid.items():
        info = project.inspect(cid)
        dumped = json.dumps(info)
        assert not any(value in dumped for value in secret_values), node
        bindings = info["HostConfig"]["PortBindings"] or {}
        if node == "node1":
            assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}
            assert set(bindings) == {"7070/tcp", "7171/tcp"}
        else:
            assert not bindings, (node, bindings)
        assert info["HostConfig"]["Memory"] == MEM_LIMIT_MIB << 20
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert project.exec(nodes.cid["node1"], "id", "-u").strip() == str(UID)

    # 2. ramster bench through node 1 (its own CLI, in its container): every page acknowledged,
    # loaded back and verified; pages spilled to both other nodes.
    t0 = time.monotonic()
    out = project.exec(nodes.cid["node1"], "ramster", "bench", "--mib", str(BENCH_MIB))
    timed("bench_s", t0)
    assert "(0 refused)" in out, out
    expected = corpus.pages((BENCH_MIB << 20) // 4096, seed=1)
    node1 = f"127.0.0.1:{env['RAMSTER_RPC_PORT']}"  # the published RPC port
    verify(node1, project.secret, expected)
    remote = nodes.stats("node1")["pool"]["remote_pages"]
    assert remote > 0
    TIMES["spilled_share"] = round(remote / len(expected), 2)
    for holder in ("node2", "node3"):
        assert nodes.stats(holder)["lent"]["stored_pages"] > 0, holder
    wait_for(lambda: nodes.redundant("node1"), 30, "R copies of every spilled page")

    # 3. A fourth node with --scale: it joins (its anonymous state volume is noted, so that the
    # end can check it is gone too).
    t0 = time.monotonic()
    project.run("up", "--detach", "--no-build", "--no-recreate", "--scale", "extra=1", extra=True)
    extra = nodes.add("extra")
    project.note_volumes()
    wait_for(nodes.one_cluster, 60, f"{extra} joins")
    timed("scale_to_4_s", t0)
    # The coordinator moves copies from the fullest holders to the newcomer (copy, verify, drop).
    wait_for(lambda: nodes.stats(extra)["lent"]["stored_pages"] > 0, 60, f"{extra} gets its share")
    wait_for(lambda: nodes.redundant("node1"), 60, "copies settle after the join")
    TIMES["newcomer_pages"] = nodes.stats(extra)["lent"]["stored_pages"]

    # 4. docker kill a holder: nothing lost or changed, full redundancy restored on the others;
    # then it comes back (new incarnation, same id and state volume) and rejoins.
    held = {n: nodes.stats(n)["lent"]["stored_pages"] for n in ("node2", "node3")}
    killed = max(held, key=lambda n: held[n])
    cut = min(held, key=lambda n: held[n]) if held["node2"] != held["node3"] else "node3"
    assert held[killed] > 0, held
    before = nodes.stats(killed)["incarnation"]
    t0 = time.monotonic()
    run(["docker", "kill", nodes.cid[killed]])
    wait_for(lambda: nodes.repaired_without("node1", killed), 60, f"repair after killing {killed}")
    timed("kill_to_repaired_s", t0)
    verify(node1, project.secret, expected)
    nodes.remove(killed)
    wait_for(lambda: nodes.redundant("node1", False), 60, "R copies on the survivors")
    t0 = time.monotonic()
    run(["docker", "start", project.container(killed)])
    assert nodes.add(killed) == killed
    assert nodes.stats(killed)["incarnation"] != before
    wait_for(nodes.one_cluster, 60, f"{killed} rejoins")
    timed("restart_to_rejoined_s", t0)
    wait_for(lambda: nodes.redundant("node1"), 60, "copies settle after the rejoin")
    verify(node1, project.secret, expected)

    # 5. Cut another holder off the network, heal it, check again.
    network, cid = project.network(), nodes.cid[cut]
    address = nodes.rpc[cut]
    t0 = time.monotonic()
    run(["docker", "network", "disconnect", network, cid])
    wait_for(lambda: nodes.repaired_without("node1", cut), 60, f"repair after cutting {cut} off")
    timed("cut_to_repaired_s", t0)
    verify(node1, project.secret, expected)
    t0 = time.monotonic()
    run(["docker", "network", "connect", network, cid])
    # Peers know a node by the address they found it at: elsewhere it would be lost to them.
    assert project.rpc(cid) == address, "the engine gave the reconnected node another address"
    wait_for(nodes.one_cluster, 60, f"{cut} rejoins after the heal")
    wait_for(lambda: nodes.redundant("node1"), 60, "stray copies dropped after the heal")
    timed("heal_to_settled_s", t0)
    verify(node1, project.secret, expected)

    # 6. Drain the added node through the CLI, then remove it: the pages stay R-redundant.
    assert nodes.stats(extra)["lent"]["stored_pages"] > 0
    t0 = time.monotonic()
    # Through node 1's admin API, with the token its container has as a compose secret.
    out = project.exec(nodes.cid["node1"], "ramster", "drain", extra, "--timeout", "120")
    assert "holds nothing now" in out, out
    assert nodes.stats(extra)["lent"]["stored_pages"] == 0
    timed("drain_s", t0)
    wait_for(lambda: nodes.redundant("node1"), 60, "R copies without the drained node")
    project.run("rm", "--stop", "--force", "-v", "extra", extra=True)
    nodes.remove(extra)
    assert not project.containers("extra", all_states=True)
    wait_for(lambda: nodes.repaired_without("node1", extra), 60, f"{extra} gone")
    wait_for(lambda: nodes.redundant("node1"), 60, "R copies on node2 and node3")
    wait_for(nodes.one_cluster, 60, "node1..3 again")
    verify(node1, project.secret, expected)

    for node, cid in nodes.cid.items():
        assert not project.inspect(cid)["State"]["OOMKilled"], node
    timed("scenario_s", t_all)
