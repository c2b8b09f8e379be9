"""The Docker files, checked without a Docker engine: the Dockerfile's stages and user, the compose services and
their commands, and that docker/.env.example lists every variable the settings and compose read."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
ENV_READER = re.compile(r"""\b(?:env_\w+|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']""")
COMPOSE_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages at FROM."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _command(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def _env_example_names() -> set[str]:
    names = set()
    for line in (DOCKER / ".env.example").read_text().splitlines():
        m = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def test_dockerfile_builds_in_stages_and_runs_as_a_non_root_user():
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    runtime = stages[-1]
    users = [ln.split()[1] for ln in runtime if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert any(ln.upper().startswith("COPY --FROM=BUILDER") for ln in runtime), "runtime copies the builder's output"
    assert not any("npm" in ln for ln in runtime), "npm stays in the builder"


def test_dockerfile_collects_static_files_and_converts_the_backbone_at_build():
    builder = " ".join(_dockerfile_stages()[0])
    assert "collectstatic" in builder and "detection.convert" in builder


def test_dockerfile_has_a_healthcheck_on_healthz():
    runtime = _dockerfile_stages()[-1]
    checks = [ln for ln in runtime if ln.upper().startswith("HEALTHCHECK")]
    assert len(checks) == 1 and "/healthz" in checks[0]


def test_dockerfile_bakes_no_secret_into_the_image():
    text = (DOCKER / "Dockerfile").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*\b(SECRET_KEY|PASSWORD|AWS_SECRET_ACCESS_KEY)\b", text, re.M)


def test_compose_has_every_service_of_a_scaled_out_deployment():
    services = _compose()["services"]
    expected = {"db", "redis", "minio", "minio-init", "migrate", "web", "worker-cpu", "worker-gpu", "beat"}
    assert expected <= set(services), expected - set(services)
    assert "gunicorn" in _command(services["web"])
    assert "migrate" in _command(services["migrate"])
    assert " beat" in _command(services["beat"])


def test_app_services_use_postgres_redis_and_s3_media():
    services = _compose()["services"]
    for name in ("web", "worker-cpu", "worker-gpu", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["CELERY_BROKER_URL"].startswith("redis://"), name
        assert env["INSPECTOR_MEDIA_STORAGE"] == "s3" and env["INSPECTOR_S3_ENDPOINT_URL"].startswith("http://minio")


def test_gpu_worker_takes_one_task_at_a_time_on_a_reserved_gpu():
    gpu = _compose()["services"]["worker-gpu"]
    cmd = _command(gpu)
    assert re.search(r"(-c|--concurrency)[ =]1\b", cmd) and re.search(r"--prefetch-multiplier[ =]1\b", cmd)
    assert re.search(r"-Q gpu\b", cmd)
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_cpu_worker_consumes_the_default_and_fit_queues():
    cmd = _command(_compose()["services"]["worker-cpu"])
    assert re.search(r"-Q celery,fit\b", cmd) and "--prefetch-multiplier 1" in cmd


def test_web_and_consoles_are_published_on_loopback_only():
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_env_example_lists_every_variable_the_settings_read():
    read = set()
    for path in [
        ROOT / "inspector" / "settings.py",
        ROOT / "inspector" / "env.py",
        *ROOT.glob("inspector/settings/*.py"),
    ]:
        if path.is_file():
            read |= set(ENV_READER.findall(path.read_text()))
    assert {"SECRET_KEY", "DATABASE_URL", "INSPECTOR_MEDIA_STORAGE"} <= read, "the scan finds the settings' reads"
    missing = read - _env_example_names()
    assert not missing, f"add to docker/.env.example: {sorted(missing)}"


def test_env_example_lists_every_variable_compose_reads():
    used = set(COMPOSE_VAR.findall((DOCKER / "compose.yaml").read_text()))
    missing = used - _env_example_names()
    assert not missing, f"add to docker/.env.example: {sorted(missing)}"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_compose_file_is_valid_for_docker_compose(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker CLI has no compose plugin here")
    env = tmp_path / ".env"
    env.write_text((DOCKER / ".env.example").read_text().replace("SECRET_KEY=\n", "SECRET_KEY=" + "x" * 50 + "\n"))
    result = subprocess.run(
        ["docker", "compose", "-f", str(DOCKER / "compose.yaml"), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
