"""Drive deploy/docker-compose.yml on the real Docker engine: images, one project, its containers.

Works with Compose v2 (`docker compose`) and v1 (`docker-compose`). Containers are found by the
labels Compose puts on them, so plain `docker` commands (kill, start, network disconnect) work on
them whatever the Compose version names them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ramster.client import SyncClient
from ramster.errors import RamsterError
from ramster.rpc import Secret

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
PROJECT_PREFIX = "ramster-e2e-"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"

T = TypeVar("T")


class DockerError(RuntimeError):
    """A docker or compose command failed; the message has its output."""


def run(
    argv: Sequence[str], timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; DockerError with its output when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise DockerError(
            f"{' '.join(argv)} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done


def docker_unavailable() -> str | None:
    """None when a Docker engine and Compose answer here, else why not."""
    if shutil.which("docker") is None:
        return "docker CLI not found (apt-get install docker.io)"
    try:
        run(["docker", "info"], timeout=30)
    except DockerError as exc:
        return f"no Docker engine answers: {str(exc).strip().splitlines()[-1]}"
    if compose_command() is None:
        return "no `docker compose` or `docker-compose` (apt-get install docker-compose)"
    return None


def compose_command() -> list[str] | None:
    """`docker compose` (v2) if it works, else `docker-compose` (v1), else None."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        try:
            run([*argv, "version"], timeout=30)
        except DockerError:
            continue
        return argv
    return None


def build_images(base_image: str, image: str) -> dict[str, float]:
    """The local base image (debootstrap, once) and the ramster image; seconds each took."""
    times: dict[str, float] = {}
    t0 = time.monotonic()
    run([str(DEPLOY / "build-base-image.sh"), base_image], timeout=1200)
    times["base_image_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    run(
        [str(DEPLOY / "build-image.sh")],
        timeout=900,
        env={"BASE_IMAGE": base_image, "IMAGE": image},
    )
    times["image_s"] = time.monotonic() - t0
    return times


def wait_for(check: Callable[[], T], within: float, what: str, every: float = 0.25) -> T:
    """Poll check() until it returns something true; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + within
    last: T | None = None
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
            error = None
        except (RamsterError, OSError, DockerError) as exc:
            error = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"not within {within:.0f} s: {what}; last: {error or last!r}")


@dataclass
class Project:
    """One Compose project of deploy/docker-compose.yml, named `name`."""

    name: str
    compose: list[str]
    env: dict[str, str]
    secret: Secret
    token: str = ""
    """The admin token: off loopback (as on the bridge) reads need it too."""
    anonymous_volumes: set[str] = field(default_factory=set)

    def run(self, *args: str, timeout: float = 180, extra: bool = False) -> str:
        """A compose command of this project (with the `extra` profile when asked); stdout."""
        profile = ["--profile", "extra"] if extra else []
        argv = [*self.compose, "--project-name", self.name, "--file", str(COMPOSE_FILE)]
        return run([*argv, *profile, *args], timeout=timeout, env=self.env).stdout

    def containers(self, service: str | None = None, all_states: bool = False) -> list[str]:
        """Ids of this project's containers (of one service), oldest first."""
        filters = ["--filter", f"label={PROJECT_LABEL}={self.name}"]
        if service is not None:
            filters += ["--filter", f"label={SERVICE_LABEL}={service}"]
        state = ["--all"] if all_states else []
        out = run(["docker", "ps", "--quiet", "--no-trunc", *state, *filters]).stdout
        return list(reversed(out.split()))

    def container(self, service: str) -> str:
        """The id of the one container of a service."""
        (cid,) = self.containers(service, all_states=True)
        return cid

    def inspect(self, cid: str) -> dict[str, Any]:
        """docker inspect of a container."""
        data: list[dict[str, Any]] = json.loads(run(["docker", "inspect", cid]).stdout)
        return data[0]

    def network(self) -> str:
        """The project's bridge network."""
        out = run(
            ["docker", "network", "ls", "--quiet", "--filter", f"label={PROJECT_LABEL}={self.name}"]
        ).stdout.split()
        (net,) = out
        name: str = json.loads(run(["docker", "network", "inspect", net]).stdout)[0]["Name"]
        return name

    def ip(self, cid: str) -> str:
        """The container's address on the project network."""
        networks = self.inspect(cid)["NetworkSettings"]["Networks"]
        address: str = networks[self.network()]["IPAddress"]
        if not address:
            raise DockerError(f"{cid[:12]} has no address on {self.network()}")
        return address

    def rpc(self, cid: str) -> str:
        """host:port of the node's RPC as this host reaches it (the bridge address)."""
        return f"{self.ip(cid)}:7070"

    def admin(self, cid: str, path: str) -> dict[str, Any]:
        """GET a JSON document from the node's admin API, on its bridge address."""
        request = urllib.request.Request(
            f"http://{self.ip(cid)}:7171{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            document: dict[str, Any] = json.load(answer)
            return document

    def health(self, cid: str) -> str:
        """The engine's verdict of the container's HEALTHCHECK (starting, healthy, unhealthy)."""
        status: str = self.inspect(cid)["State"]["Health"]["Status"]
        return status

    def stats(self, address: str) -> dict[str, Any]:
        """node.stats over the RPC."""
        with SyncClient(address, self.secret) as client:
            return client.stats()

    def exec(self, cid: str, *argv: str, timeout: float = 180) -> str:
        """Run a command in a container; stdout."""
        return run(["docker", "exec", cid, *argv], timeout=timeout).stdout

    def note_volumes(self) -> None:
        """Remember the anonymous volumes of the containers (they carry no project label)."""
        for cid in self.containers(all_states=True):
            for mount in self.inspect(cid)["Mounts"]:
                if mount["Type"] == "volume" and PROJECT_LABEL not in self._volume_labels(
                    mount["Name"]
                ):
                    self.anonymous_volumes.add(mount["Name"])

    @staticmethod
    def _volume_labels(name: str) -> dict[str, str]:
        info = json.loads(run(["docker", "volume", "inspect", name]).stdout)[0]
        labels: dict[str, str] = info.get("Labels") or {}
        return labels

    def logs(self) -> str:
        """The last lines of every container's log."""
        try:
            return self.run("logs", "--no-color", "--tail", "40", extra=True, timeout=60)
        except DockerError as exc:
            return str(exc)

    def down(self) -> None:
        """Remove the project's containers, networks and volumes."""
        down(self.compose, self.name, self.env)

    def leftovers(self) -> list[str]:
        """What of this project is still on the engine (empty after a clean `down`)."""
        label = f"label={PROJECT_LABEL}={self.name}"
        left = [f"container {c[:12]}" for c in self.containers(all_states=True)]
        for kind in ("network", "volume"):
            out = run(["docker", kind, "ls", "--quiet", "--filter", label]).stdout
            left += [f"{kind} {x}" for x in out.split()]
        existing = set(run(["docker", "volume", "ls", "--quiet"]).stdout.split())
        left += [f"volume {v}" for v in sorted(self.anonymous_volumes & existing)]
        return left


def down(compose: Sequence[str], name: str, env: Mapping[str, str] | None = None) -> None:
    """`down` of a project of the compose file: containers, networks, volumes (anonymous too)."""
    argv = [*compose, "--project-name", name, "--file", str(COMPOSE_FILE), "--profile", "extra"]
    run([*argv, "down", "--volumes", "--remove-orphans", "--timeout", "5"], timeout=180, env=env)


def stale_projects() -> set[str]:
    """Names of test projects an earlier, crashed run left on the engine."""
    names: set[str] = set()
    for kind in (["ps", "--all"], ["network", "ls"], ["volume", "ls"]):
        out = run(
            ["docker", *kind, "--filter", f"label={PROJECT_LABEL}", "--format", "{{.Labels}}"]
        ).stdout
        for line in out.splitlines():
            for label in line.split(","):
                key, _, value = label.partition("=")
                if key == PROJECT_LABEL and value.startswith(PROJECT_PREFIX):
                    names.add(value)
    return names
