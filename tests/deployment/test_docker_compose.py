"""The compose files: always checked against the Compose Specification's JSON schema, and with
`docker compose config` where the Docker client has the compose plugin.

Images cannot be built in CI without a Docker engine, and CI has no compose plugin; the schema
check (check-jsonschema's vendored compose-spec schema, installed with the test extra) needs
neither, so a broken compose file fails CI. The structural test pins the flwr 1.41 flags the
services rely on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
OVERLAYS = [["compose.yml"], ["compose.yml", "with-tls.yml"], ["compose.yml", "with-gpu.yml"],
            ["compose.yml", "with-resident.yml"]]

COMPOSE_FILES = sorted(DOCKER.glob("*.yml"))


def _schema_errors(*paths: Path) -> str:
    """check-jsonschema's report on `paths` against the compose-spec schema; "" when all are valid."""
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def test_every_compose_file_matches_the_compose_spec_schema() -> None:
    assert {p.name for p in COMPOSE_FILES} >= {"compose.yml", "with-tls.yml", "with-gpu.yml"}
    assert _schema_errors(*COMPOSE_FILES) == ""


@pytest.mark.parametrize(("old", "new", "error"), [
    ("    command:\n      - --insecure\n      - --isolation", "    comand:\n      - --insecure\n      - --isolation",
     "'comand' was unexpected"),
    ('    ports:\n      - "${SUPERLINK_PORT:-8000}:8000"', '    ports: "${SUPERLINK_PORT:-8000}:8000"',
     "is not of type 'array'"),
], ids=["misspelled-key", "ports-not-a-list"])
def test_a_broken_compose_file_is_rejected(old: str, new: str, error: str, tmp_path: Path) -> None:
    text = (DOCKER / "compose.yml").read_text()
    assert text.count(old) == 1
    broken = tmp_path / "compose.yml"
    broken.write_text(text.replace(old, new))
    assert error in _schema_errors(broken)


def _compose_missing() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    proc = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if proc.returncode == 0:
        return None
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    return f"`docker compose version` failed: {detail[0] if detail else proc.returncode}"


def _secrets(folder: Path) -> None:
    """Placeholder files for the TLS overlay's secrets (config checks that they exist)."""
    for name in ("certs/ca.crt", "certs/server.pem", "certs/server.key", "keys/supernode-1", "keys/supernode-2",
                 "superexec-secret"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()


@pytest.mark.parametrize("files", OVERLAYS, ids=["base", "tls", "gpu", "resident"])
def test_docker_compose_config_is_valid(files: list[str], tmp_path: Path) -> None:
    reason = _compose_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path / "docker"
    shutil.copytree(DOCKER, work)
    _secrets(work)
    args = [arg for name in files for arg in ("-f", str(work / name))]
    proc = subprocess.run(["docker", "compose", *args, "config", "--quiet"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def _load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def test_compose_services_use_current_flower_flags() -> None:
    services = _load("compose.yml")["services"]
    assert set(services) == {"superlink", "superexec-serverapp", "supernode-1", "superexec-clientapp-1",
                             "supernode-2", "superexec-clientapp-2"}
    removed = ("--clientappio-api-address", "--fleet-api-address", "--serverappio-api-address", "--plugin-type")
    for name, service in services.items():
        assert not set(service["command"]) & set(removed), name
    assert services["superexec-clientapp-1"]["command"][-1] == "supernode-1:9094"
    assert services["superexec-serverapp"]["command"][-1] == "superlink:8000"
    partitions = [services[f"supernode-{i}"]["command"][-1] for i in (1, 2)]
    assert partitions == ["partition-id=0 num-partitions=2", "partition-id=1 num-partitions=2"]
    tls = _load("with-tls.yml")["services"]
    assert "--enable-supernode-auth" in tls["superlink"]["command"]
    assert "--insecure" not in tls["superexec-serverapp"]["command"]
    for i in (1, 2):
        assert {"--root-certificates", "--auth-supernode-private-key"} <= set(tls[f"supernode-{i}"]["command"])
    gpu = _load("with-gpu.yml")["services"]
    assert all(gpu[f"superexec-clientapp-{i}"]["deploy"]["resources"]["reservations"]["devices"] for i in (1, 2))
    resident = _load("with-resident.yml")["services"]
    for i in (1, 2):
        node, executor = resident[f"supernode-{i}"]["command"], resident[f"superexec-clientapp-{i}"]
        assert node[node.index("--host") + 1] == "127.0.0.1" and node[node.index("--isolation") + 1] == "process"
        assert executor["entrypoint"] == ["feddqc-executor"] and executor["network_mode"] == f"service:supernode-{i}"
        assert "--superexec-auth-secret-file" in node and "--superexec-auth-secret-file" in executor["command"]
