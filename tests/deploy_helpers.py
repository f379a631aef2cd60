"""Helpers the deployment tests share (test_k8s, test_k8s_render, test_k8s_scaleout,
test_multinode, the container tests, test_router_live): the Kubernetes renders, the deploy/
scripts loaded by path, the .dockerignore rules, the metric names the manifests query.
Test modules import these from here, never from each other."""

from __future__ import annotations

import copy
import functools
import importlib.util
import math
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# Overlays combined with the addons no overlay includes (the HPA instead of KEDA, the image
# pre-pull): rendered, compared, validated and scanned like the overlays.
EXAMPLES = sorted(f"examples/{p.name}" for p in (K8S / "examples").iterdir() if p.is_dir())
KUSTOMIZATIONS = OVERLAYS + EXAMPLES
NAMESPACE = "s1-serve"
# (TP, DP, PP, GPUs per pod, pods per replica) of each overlay.
SHAPES = {"1xh100": (1, 1, 1, 1, 1), "8xh100-tp8": (8, 1, 1, 8, 1),
          "8xh100-tp4x2": (4, 1, 1, 4, 1), "2x8xh100-multinode": (8, 1, 2, 8, 2),
          "2x8xh100-multinode-rdma": (8, 1, 2, 8, 2)}


# ------------------------------------------------------------------------- deploy scripts
@functools.cache
def load_deploy_script(name: str):
    """Import deploy/<name>.py by path (deploy/ is not a package), once per session."""
    spec = importlib.util.spec_from_file_location(f"s1_deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ renders
def load_renderer():
    spec = importlib.util.spec_from_file_location("s1_k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_renderer()


def kustomization_dir(name: str) -> Path:
    """An overlay's name (1xh100) or a path under deploy/k8s (examples/1xh100-hpa)."""
    return K8S / name if "/" in name else K8S / "overlays" / name


@functools.cache
def _rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render.build(kustomization_dir(overlay)))


def rendered(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(overlay)))


def find(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def pod_templates(docs: list[dict]) -> dict[str, dict]:
    """{role: pod template} of every workload in the render."""
    out = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            out[doc["metadata"]["name"]] = doc["spec"]["template"]
        elif doc["kind"] == "LeaderWorkerSet":
            lwt = doc["spec"]["leaderWorkerTemplate"]
            out["leader"], out["worker"] = lwt["leaderTemplate"], lwt["workerTemplate"]
    return out


def server_pod(docs: list[dict]) -> dict:
    """The pod template whose container serves HTTP on 8000."""
    pods = [t for t in pod_templates(docs).values()
            if any(p.get("containerPort") == 8000 for c in t["spec"]["containers"]
                   for p in c.get("ports", []))]
    assert len(pods) == 1
    return pods[0]


def plain_env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def memory_plan(overlay: str, gpu_bytes: int):
    """The memory arithmetic of server/engine/preflight.py for one overlay's serving pod."""
    from server.engine.preflight import MemoryPlan
    from tests.helpers import SHAPE

    env = plain_env(server_pod(rendered(overlay))["spec"]["containers"][0])
    tp, _, pp, _, _ = SHAPES[overlay]
    # A pipeline stage holds 1/PP of the layers: of the weights and of each token's KV.
    return MemoryPlan(weight_bytes=math.ceil(SHAPE.param_count() * 2 / pp),
                      kv_bytes_per_token=SHAPE.kv_bytes_per_token(2, tp) // pp,
                      max_model_len=int(env["S1_MAX_MODEL_LEN"]), tensor_parallel_size=tp,
                      gpu_bytes=gpu_bytes,
                      gpu_memory_utilization=float(env["S1_GPU_MEMORY_UTILIZATION"]))


def k8s_metric_names() -> dict[str, str]:
    """{metric: where} for every metric a shipped autoscaler, adapter rule or alert names."""
    from tests.helpers import promql_metric_names

    names: dict[str, str] = {}
    for overlay in OVERLAYS + EXAMPLES:
        for doc in rendered(overlay):
            exprs = []
            if doc["kind"] == "ScaledObject":
                exprs = [t["metadata"]["query"] for t in doc["spec"]["triggers"]]
            elif doc["kind"] == "PrometheusRule":
                exprs = [r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]]
            for expr in exprs:
                for name in promql_metric_names(expr):
                    names.setdefault(name, f"{overlay}: {doc['kind']}")
    values = yaml.safe_load((K8S / "addons/autoscaling-hpa/prometheus-adapter-values.yaml")
                            .read_text())
    for rule in values["rules"]["custom"]:
        names.setdefault(rule["seriesQuery"].split("{")[0], "prometheus-adapter rule")
    return names


# ---------------------------------------------------------------------------- the image
class DockerIgnore:
    """The .dockerignore rules: patterns in order, the last match (of a path or of a
    folder above it) wins; ``!`` re-includes; ``*``/``?`` stay within one path segment."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line[1:].strip() if include else line
            self.rules.append((include, re.compile(self._regex(pattern.strip("/")))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return "^" + out + "$"

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for include, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not include
        return result


def tool_venv(name: str, requirement: str, provides: str) -> Path:
    """``provides`` (a path inside a virtual environment under .cache/tools holding
    ``requirement``, a tool whose pins conflict with .venv's), installed from PyPI on first
    use; the test skips, with the reason as a warning, where that install fails
    (docs/development.md)."""
    import subprocess
    import warnings

    import pytest

    venv = ROOT / ".cache" / "tools" / name
    if not (venv / provides).exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           capture_output=True, timeout=120)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", requirement],
                           check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            reason = (f"{requirement} could not be installed from PyPI into {venv}: {exc} "
                      f"{detail.decode(errors='replace')[-500:]}")
            warnings.warn(reason, stacklevel=2)
            pytest.skip(reason)
    return venv / provides
