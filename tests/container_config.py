"""Readers of the container deployment's files, shared by the deployment tests
(test_dockerfile, test_dockerfile_build, test_compose, test_monitoring_config,
test_deploy_live_metrics): the Dockerfile parsed into instructions, docker-compose.yml's
services, variables and interpolation, .env.example's entries, and the PromQL
expressions of the Grafana dashboard and the Prometheus configuration. Test modules
import these from here, never from each other."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from server.settings import Settings

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



def clear_s1_env(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("S1_")]:
        monkeypatch.delenv(key)
