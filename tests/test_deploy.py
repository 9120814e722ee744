"""The deployment files: Dockerfile, docker-compose.yml, deploy/haproxy.cfg, the container's
health check and the systemd unit. Without a container engine, so what can be checked
here is what the files say and what the tools that read them (haproxy -c, systemd-analyze)
make of them; tests/e2e/test_topology.py runs the balancer config for real."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fwtest import REPO, free_port

from forkwire.client.local import LocalServer
from forkwire.server.config import Settings

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
UNIT = REPO / "deploy" / "forkwire.service"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of NAME=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): str(value) for name, value in env.items()}


def settings_variable(name: str) -> bool:
    """Whether FORKWIRE_<FIELD> is a real setting of the server."""
    field = name.removeprefix("FORKWIRE_").lower()
    return name.startswith("FORKWIRE_") and field in Settings.model_fields


def dockerfile_env() -> dict[str, str]:
    """The ENV lines of the final stage, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def test_compose_builds_the_server_image_and_installs_nothing_at_start() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "forkwire", "balancer"}
    assert services["forkwire"]["build"] in (".", {"context": "."})
    for name, service in services.items():
        for key in ("command", "entrypoint"):
            text = (
                " ".join(service.get(key) or [])
                if isinstance(service.get(key), list)
                else str(service.get(key) or "")
            )
            assert "pip" not in text.split(), f"{name}.{key} runs pip: {text}"
            assert "install" not in text, f"{name}.{key} installs something: {text}"
        # Nothing of the repository is mounted into a server: it runs what the image holds.
        if name == "forkwire":
            assert not service.get("volumes"), service.get("volumes")


def test_every_forkwire_variable_is_a_setting() -> None:
    """Compose and the image set only FORKWIRE_<FIELD> names the server knows; a typo
    would be ignored by the server (pydantic-settings reads only its own fields)."""
    names = [name for s in compose()["services"].values() for name in environment(s)]
    names += list(dockerfile_env())
    forkwire_names = [name for name in names if name.startswith("FORKWIRE_")]
    assert "FORKWIRE_DB" in forkwire_names
    unknown = [name for name in forkwire_names if not settings_variable(name)]
    assert not unknown, f"not settings of server/config.py: {unknown}"
    # ...and the values are ones the server accepts.
    for service in compose()["services"].values():
        values = {
            name.removeprefix("FORKWIRE_").lower(): value
            for name, value in environment(service).items()
            if name.startswith("FORKWIRE_")
        }
        if values:
            Settings.model_validate(values)


def test_compose_runs_postgres_with_a_health_check_and_scales_the_servers() -> None:
    services = compose()["services"]
    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in db["healthcheck"]["test"]
    server = services["forkwire"]
    assert server["depends_on"]["db"]["condition"] == "service_healthy"
    assert server["deploy"]["replicas"] >= 2
    # One port can't be published by every replica: none is for TCP (the balancer's is),
    # UDP gets a free host port per replica.
    assert all(str(port).endswith("/udp") for port in server.get("ports", []))
    assert environment(server)["FORKWIRE_DB"].startswith("postgresql://")
    assert float(server["stop_grace_period"].removesuffix("s")) > Settings().grace


def test_compose_balancer_mounts_the_repository_haproxy_config() -> None:
    balancer = compose()["services"]["balancer"]
    assert balancer["image"].startswith("haproxy:")
    mounts = [str(volume).split(":") for volume in balancer["volumes"]]
    assert ["./deploy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg", "ro"] in mounts
    env = environment(balancer)
    # The DNS-based backend of deploy/haproxy.cfg, pointed at the servers' service name.
    assert env["BALANCER_DNS"] == "forkwire:7700"
    assert not any(name.startswith(("FW1", "FW2", "FW3")) for name in env)


def compose_v2() -> list[str] | None:
    """A Docker Compose v2 command line: the docker CLI's plugin, or a standalone
    docker-compose of version 2 (v1 does not know the top-level ``name``)."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        version = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False
        )
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def test_compose_file_per_docker_compose() -> None:
    """`docker compose config` reads the file as Compose does (it needs no daemon)."""
    command = compose_v2()
    if command is None:
        pytest.skip("no Docker Compose v2 here to read docker-compose.yml")
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    # Some wrappers exit 0 whatever compose said: what it printed counts too.
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) >= 2, stages
    assert "pip wheel" in text
    assert ".[postgres]" in text
    final = text.split("\nFROM ")[-1]
    assert "forkwire[postgres]" in final
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users, "the final stage runs as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users
    assert re.search(r"^HEALTHCHECK\s", final, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["forkwire-server"\]', final, re.MULTILINE)
    assert re.search(r"^EXPOSE 7700/tcp 7700/udp", final, re.MULTILINE)
    assert dockerfile_env()["FORKWIRE_HOST"] == "0.0.0.0"
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+", final, re.MULTILINE):
        assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    for name in (".venv", "build", "**/__pycache__", ".pytest_cache", "**/*.sqlite"):
        assert name in ignored, name


def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "FW"))}
    return subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)],
        capture_output=True,
        text=True,
        check=False,
        env={**clean, **env},
    )


def test_haproxy_config_is_valid_for_compose_and_for_fixed_servers() -> None:
    """Both branches of deploy/haproxy.cfg: the DNS template compose uses, and the three
    fixed servers the topology test uses."""
    dns = haproxy_check({"BALANCER_DNS": "forkwire:7700", "BALANCER_BIND": ":7700"})
    assert dns.returncode == 0, dns.stderr
    fixed = haproxy_check({f"FW{i}": f"127.0.0.1:{7700 + i}" for i in (1, 2, 3)})
    assert fixed.returncode == 0, fixed.stderr
    # Without either, it says what is missing instead of starting with no backend.
    missing = haproxy_check({})
    assert missing.returncode != 0


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(HEALTHCHECK)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        # -I ignores PYTHON* variables and the checkout, as in the slim image.
        env={**os.environ, "FORKWIRE_PORT": str(port)},
    )


async def test_container_healthcheck_passes_on_a_server(server: LocalServer) -> None:
    done = await asyncio.to_thread(run_healthcheck, server.port)
    assert done.returncode == 0, done.stderr


async def test_container_healthcheck_fails_without_a_server() -> None:
    done = await asyncio.to_thread(run_healthcheck, free_port())
    assert done.returncode == 1
    assert done.stderr.startswith("unhealthy: 127.0.0.1:")


async def test_container_healthcheck_fails_on_another_protocol() -> None:
    """A port that accepts connections but does not speak forkwire is unhealthy."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        answering = asyncio.create_task(asyncio.to_thread(answer_http))
        done = await asyncio.to_thread(run_healthcheck, listener.getsockname()[1])
        await asyncio.wait_for(answering, 10)
    assert done.returncode == 1
    assert "unhealthy" in done.stderr


def unit_settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_unit_runs_the_server_as_its_own_user_and_outlasts_its_grace() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["exec"]
    assert unit["ExecStart"] == ["/usr/local/bin/forkwire-server"]
    assert unit["EnvironmentFile"] == ["-/etc/forkwire/env"]
    assert unit["User"][0] not in ("root", "0")
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert float(unit["TimeoutStopSec"][0].removesuffix("s")) > Settings().grace
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[hardening] == ["yes"], hardening
    assert unit["ProtectSystem"] == ["strict"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` reads the unit as systemd would: an unknown key or a bad
    value is reported. It also wants ExecStart to exist, so the copy checked here runs this
    environment's forkwire-server instead of /usr/local/bin's."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    server = Path(sys.executable).with_name("forkwire-server")
    assert server.exists(), server
    copy = tmp_path / UNIT.name
    copy.write_text(
        UNIT.read_text().replace("ExecStart=/usr/local/bin/forkwire-server", f"ExecStart={server}")
    )
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""
