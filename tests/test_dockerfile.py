"""The Dockerfile, read without Docker: known instructions in their forms, the stages and
their base images (the GPU one pinned to the gpu extra's vLLM), what each runtime stage
runs as, exposes and health-checks, and COPY sources that exist and that .dockerignore
lets into the build context. Running the stages' RUN steps is test_dockerfile_build."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.container_config import (
    ROOT,
    Instruction,
    compose_env,
    compose_variables,
    dockerfile_env,
    duration_seconds,
    parse_dockerfile,
    settings_env_names,
    stage_instructions,
)
from tests.deploy_helpers import DockerIgnore


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def test_dockerfile_parses_into_known_instructions(dockerfile):
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "HEALTHCHECK",
             "ENTRYPOINT", "CMD", "LABEL", "SHELL", "STOPSIGNAL", "VOLUME", "ADD", "ONBUILD"}
    assert dockerfile, "empty Dockerfile"
    assert {i.cmd for i in dockerfile} <= known
    assert dockerfile[0].cmd in ("ARG", "FROM")
    for ins in dockerfile:
        if ins.cmd in ("ENTRYPOINT", "CMD") or (ins.cmd == "HEALTHCHECK" and "[" in ins.args):
            exec_form = ins.args[ins.args.index("["):] if ins.cmd == "HEALTHCHECK" else ins.args
            assert isinstance(json.loads(exec_form), list), f"line {ins.line}: exec form"


def test_dockerfile_stages_and_base_images(dockerfile):
    import tomllib

    froms = [i for i in dockerfile if i.cmd == "FROM"]
    assert [f.stage for f in froms] == ["cpu", "router", "gpu"], "gpu must be last (default)"
    global_args = {}
    for ins in dockerfile:
        if ins.cmd == "FROM":
            break
        if ins.cmd == "ARG":
            key, _, value = ins.args.partition("=")
            global_args[key] = value
    gpu_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["gpu"]
    vllm_pin = next(r.split("==")[1] for r in gpu_extra if r.startswith("vllm=="))
    assert froms[2].args.split()[0] == "vllm/vllm-openai:${VLLM_VERSION}"
    assert global_args["VLLM_VERSION"] == f"v{vllm_pin}", "base image and gpu extra differ"
    cpu_base = froms[0].args.split()[0]
    if cpu_base.startswith("${"):
        cpu_base = global_args[cpu_base.strip("${}")]
    assert cpu_base.startswith("python:3.11-slim")


# Programs a build step may run that would change this machine (or need the network): the

@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_dockerfile_runtime_pieces(dockerfile, stage):
    ins = stage_instructions(dockerfile, stage)
    by_cmd = {}
    for i in ins:
        by_cmd.setdefault(i.cmd, []).append(i)
    assert json.loads(by_cmd["ENTRYPOINT"][-1].args) == ["s1-serve"]
    users = by_cmd.get("USER", [])
    assert users and users[-1].args not in ("root", "0"), "must run as a non-root user"
    assert users[-1].line < by_cmd["ENTRYPOINT"][-1].line
    assert "8000" in by_cmd["EXPOSE"][-1].args.split()
    env = dockerfile_env(ins)
    assert env["S1_HOST"] == "0.0.0.0", "inside a container the server must bind 0.0.0.0"
    assert env["S1_PORT"] == "8000"
    unknown = {k for k in env if k.startswith("S1_")} - set(settings_env_names())
    assert not unknown, f"Dockerfile sets variables the server does not read: {unknown}"
    health = by_cmd["HEALTHCHECK"][-1].args
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", health))
    command = json.loads(health[health.index("["):])
    assert command[:1] == ["python3"] and command[1].endswith("/deploy/healthcheck.py")
    workdir = next(i.args for i in ins if i.cmd == "WORKDIR")
    assert command[1] == f"{workdir}/deploy/healthcheck.py"
    start = duration_seconds(flags["start-period"])
    assert start >= (20 * 60 if stage == "gpu" else 60), "too short for the model to load"
    assert duration_seconds(flags["timeout"]) < duration_seconds(flags["interval"])
    if stage == "gpu":
        compose = compose_env("s1")
        assert env["S1_MODEL"] == compose_variables(compose["S1_MODEL"])["S1_MODEL"]
        assert env["S1_THINKING_FORMAT"] == "s1"


def test_dockerfile_copies_exist_and_are_in_the_build_context(dockerfile):
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for ins in dockerfile:
        if ins.cmd != "COPY":
            continue
        sources = [a for a in shlex.split(ins.args) if not a.startswith("--")][:-1]
        for source in sources:
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"line {ins.line}: {source} missing"
            assert not ignore.excluded(source), f"line {ins.line}: {source} is dockerignored"


def test_dockerignore_keeps_what_the_image_needs():
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    for path in ("pyproject.toml", "README.md", "server/api/app.py", "server/demo_model/config.json",
                 "server/demo_model/model.safetensors", "client/cli.py", "training/tiny.py",
                 "deploy/healthcheck.py", "deploy/requirements.py"):
        assert not ignore.excluded(path), path
    for path in (".git/HEAD", ".venv/bin/python", ".cache/tiny-s1/model.safetensors",
                 "server/__pycache__/app.cpython-311.pyc", "s1_serve.egg-info/PKG-INFO",
                 "tests/test_dockerfile.py", ".env", "deploy/prometheus/prometheus.yml",
                 "runs/x/model.safetensors"):
        assert ignore.excluded(path), path

