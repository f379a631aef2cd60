"""Checks of the Kubernetes manifests (deploy/k8s) that need no cluster.

Every overlay is rendered with deploy/k8s/render.py (pure Python; compared with
``kubectl kustomize`` where kubectl is installed), validated against the Kubernetes API
schemas of kubernetes-validate (strict: unknown fields fail) and, for the CRDs, against
tests/k8s_schemas.py, and scanned with checkov's Kubernetes policies. The rest ties the
manifests to the server: every variable is a setting, the GPU counts match TP x DP x PP, the
memory fits, the shutdown fits the grace period, and every metric the autoscaler asks for is
one the server or vLLM defines.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from server.settings import Settings
from tests.deploy_helpers import (
    KUSTOMIZATIONS,
    NAMESPACE,
    OVERLAYS,
    ROOT,
    SHAPES,
    find,
    kustomization_dir,
    matches,
    memory_plan,
    plain_env,
    pod_templates,
    render,
    rendered,
    server_pod,
    tool_venv,
)
from tests.k8s_schemas import CRD_SCHEMAS

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "s1-serve.json"
KUBERNETES_VERSION = "1.33"  # oldest release we validate for (LWS and KEDA support it)
# Variables the pods get that are not S1_* settings, and who reads them.
NON_SETTING_ENV = {
    "HF_TOKEN_PATH": "huggingface_hub: the token file from the optional Secret",
    "HOME": "torch, Triton and Ray caches (the pod's uid has no passwd entry)",
    "USER": "getpass.getuser() in torch and Ray (no passwd entry)",
    "VLLM_HOST_IP": "vLLM's multi-node processes: the address this pod advertises",
    "MODEL_REVISION": "deploy/download_model.py, deploy/multinode.py and --revision in args",
    "HF_HUB_OFFLINE": "huggingface_hub: serve from the cache the download Job filled",
    "MULTINODE_JOIN_ATTEMPTS": "deploy/multinode.py: the worker's retry budget",
    "MULTINODE_JOIN_DELAY_S": "deploy/multinode.py: the wait between join attempts",
    "NCCL_IB_DISABLE": "NCCL: use InfiniBand/RoCE (the rdma overlay)",
    "NCCL_IB_HCA": "NCCL: which HCAs (the rdma overlay)",
}
# GPU memory as vLLM sees it (torch.cuda.mem_get_info's total, about 79.1 GiB on an H100
# 80 GB, not NVML's 79.65 GiB), for each GPU product the overlays' node affinity admits.
GPU_MEMORY = {"NVIDIA-H100-80GB-HBM3": int(79.1 * 2**30), "NVIDIA-H100-PCIe": int(79.1 * 2**30)}
# checkov checks that cannot apply here, and why. Everything else must pass.
CHECKOV_SKIPS = {
    "CKV_K8S_43": "image digest pinning: the image is built from this repository's Dockerfile "
                  "and pushed by the operator, so its digest exists only after the push; set "
                  "`digest:` in the overlay's images entry when deploying",
}
# Per kustomization: checks its design must fail, and why.
CHECKOV_KUSTOMIZATION_SKIPS = {
    "2x8xh100-multinode-rdma": {
        "CKV_K8S_25": "an added capability: IPC_LOCK is what lets NCCL pin buffers for the HCAs",
        "CKV_K8S_37": "capabilities: IPC_LOCK, as above",
    },
}
CHECKOV_VERSION = "3.3.30"


def normalized(value):
    """Lists of named items sorted by name: kustomize and render.py order merged lists apart."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalized(i) for i in value]
        if items and all(isinstance(i, dict) and "name" in i for i in items):
            items.sort(key=lambda i: i["name"])
        return items
    return value


# ------------------------------------------------------------------------------ rendering
def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_renderer_matches_kustomize(overlay):
    cmd = kustomize_command()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed; render.py's unit tests run")
    out = subprocess.run([*cmd, str(kustomization_dir(overlay))], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    theirs = {render.key_of(d): normalized(d) for d in yaml.safe_load_all(out) if d}
    ours = {render.key_of(d): normalized(d) for d in rendered(overlay)}
    assert ours.keys() == theirs.keys()
    for key, doc in theirs.items():
        assert ours[key] == doc, f"{overlay}: {key} differs from {' '.join(cmd)}"


# ------------------------------------------------------------------------------ schemas
@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_manifests_validate_against_api_schemas(overlay):
    try:
        import kubernetes_validate
    except ImportError:  # the dev extra has it; say how to get it rather than skip
        pytest.fail("kubernetes-validate is missing: pip install -e '.[dev]'")
    import jsonschema

    for doc in rendered(overlay):
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # Pod templates inside custom resources, against the real PodTemplateSpec.
    for role, template in pod_templates(find(rendered(overlay), "LeaderWorkerSet")).items():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": role}, "template": template},
                                     KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_mistakes():
    import jsonschema
    import kubernetes_validate

    deployment = copy.deepcopy(find(rendered("1xh100"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(find(rendered("1xh100"), "ScaledObject")[0])
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


# ------------------------------------------------------------------------------ policy scan
@pytest.fixture(scope="module")
def checkov() -> list[str]:
    """checkov in its own virtual environment under .cache/tools: its pins (packaging<24,
    networkx<2.7, boto3==...) conflict with vLLM's and torch's, so it cannot share .venv."""
    if shutil.which("checkov"):
        return ["checkov"]
    return [str(tool_venv("checkov", f"checkov=={CHECKOV_VERSION}", "bin/checkov"))]


def scan_input(docs: list[dict]) -> list[dict]:
    """The render, with each LeaderWorkerSet template also as a Deployment: checkov's
    Kubernetes policies look at built-in workloads only."""
    out = list(docs)
    for doc in find(docs, "LeaderWorkerSet"):
        for role, template in pod_templates([doc]).items():
            out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": f"{doc['metadata']['name']}-{role}",
                                     "namespace": doc["metadata"]["namespace"]},
                        "spec": {"selector": {"matchLabels": template["metadata"]["labels"]},
                                 "template": template}})
    return out


def test_checkov_policy_scan(checkov, tmp_path):
    # One run per set of skips: the common ones, plus those a kustomization must fail.
    runs: dict[tuple[str, ...], list[str]] = {}
    for overlay in KUSTOMIZATIONS:
        path = tmp_path / f"{overlay.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump_all(scan_input(rendered(overlay)), sort_keys=False))
        skips = tuple(sorted({**CHECKOV_SKIPS, **CHECKOV_KUSTOMIZATION_SKIPS.get(overlay, {})}))
        runs.setdefault(skips, []).extend(["-f", str(path)])
    # No network: skip fetching Prisma Cloud's guideline mappings. Files, not -d: checkov
    # ignores folders below a hidden one (.cache/tmp).
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    passed, failed = 0, []
    for skips, files in runs.items():
        out = subprocess.run([*checkov, *files, "--framework", "kubernetes",
                              "--output", "json", "--quiet", "--compact",
                              "--skip-check", ",".join(skips)],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode in (0, 1), out.stderr[-2000:]
        report = json.loads(out.stdout) if out.stdout.strip() else {}
        reports = report if isinstance(report, list) else [report]
        passed += sum(r.get("summary", {}).get("passed", 0) for r in reports)
        failed += [f"{c['check_id']} {c['check_name']}: {c['resource']} "
                   f"({Path(c['file_path']).name})"
                   for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert passed > 50, (passed, runs)
    assert not failed, "\n".join(failed)


# ------------------------------------------------------------------------------ the server
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_vars_are_settings_and_shape_matches_gpus(overlay, monkeypatch):
    settings_env = {f"S1_{name.upper()}" for name in Settings.model_fields}
    for role, template in pod_templates(rendered(overlay)).items():
        for container in template["spec"]["containers"]:
            for name in plain_env(container):
                assert name in settings_env or name in NON_SETTING_ENV, (
                    f"{overlay}/{role}: {name} is neither a setting nor listed with a reason")
    container = server_pod(rendered(overlay))["spec"]["containers"][0]
    for key in [k for k in os.environ if k.startswith("S1_")]:
        monkeypatch.delenv(key)
    for name, value in plain_env(container).items():
        if name.startswith("S1_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    tp, dp, pp, gpus, pods = SHAPES[overlay]
    assert (settings.tensor_parallel_size, settings.data_parallel_size,
            settings.pipeline_parallel_size) == (tp, dp, pp)
    for template in pod_templates(rendered(overlay)).values():
        for c in template["spec"]["containers"]:
            assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
            assert c["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
    assert tp * dp * pp == gpus * pods
    lws = find(rendered(overlay), "LeaderWorkerSet")
    assert (lws[0]["spec"]["leaderWorkerTemplate"]["size"] if lws else 1) == pods
    # Multi-node runs vLLM's own mp executor over the group (deploy/multinode.py), no Ray.
    assert settings.distributed_executor_backend in (None, "mp")
    assert settings.api_key_file is not None  # API keys come from the Secret


def gpu_products(template: dict) -> list[str]:
    """The nvidia.com/gpu.product values a pod template's required node affinity admits."""
    terms = template["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [v for term in terms for expr in term["matchExpressions"]
            if expr["key"] == "nvidia.com/gpu.product" and expr["operator"] == "In"
            for v in expr["values"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_s1_32b_fits_each_layout(overlay):
    """README, "Memory: what fits on H100s": on every GPU the pods may be placed on."""
    env = plain_env(server_pod(rendered(overlay))["spec"]["containers"][0])
    assert env["S1_MODEL"] == "simplescaling/s1.1-32B"
    for template in pod_templates(rendered(overlay)).values():
        products = gpu_products(template)
        assert products and set(products) <= set(GPU_MEMORY), products
        for product in products:
            plan = memory_plan(overlay, GPU_MEMORY[product])
            assert plan.fits and plan.full_sequences > 1.2, (product, plan.summary())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_graceful_termination(overlay):
    template = server_pod(rendered(overlay))
    spec, container = template["spec"], template["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60, "model load"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(plain_env(container)["S1_SHUTDOWN_GRACE_S"])
    # A rollout must not cut a request that is still within its deadline.
    assert grace >= float(plain_env(container)["S1_REQUEST_TIMEOUT_S"]) > 0
    # preStop, then the server's grace, then up to 5 s to flush aborted streams, then margin.
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + grace + 5 + 10
    for template in pod_templates(rendered(overlay)).values():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert "livenessProbe" in c and "readinessProbe" in c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_select_the_serving_pods(overlay):
    docs = rendered(overlay)
    assert {d["metadata"]["namespace"] for d in docs} == {NAMESPACE}
    server = server_pod(docs)
    labels = dict(server["metadata"]["labels"])
    if find(docs, "LeaderWorkerSet"):  # added by the LWS controller to the leader
        labels["leaderworkerset.sigs.k8s.io/worker-index"] = "0"
    service = find(docs, "Service")[0]
    assert matches(service["spec"]["selector"], labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for template in pod_templates(docs).values():
        pod_labels = template["metadata"]["labels"]
        assert matches(find(docs, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
                       pod_labels)
        assert matches(find(docs, "NetworkPolicy")[0]["spec"]["podSelector"]["matchLabels"],
                       pod_labels)
    monitor = find(docs, "ServiceMonitor")[0]
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    target = find(docs, "ScaledObject")[0]["spec"]["scaleTargetRef"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "LeaderWorkerSet")]
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in workloads] == [
        (target["apiVersion"], target["kind"], target["name"])]
    volumes = {v["name"]: v for v in server["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "s1-serve-api-keys"
    mounts = {m["name"]: m["mountPath"] for m in server["spec"]["containers"][0]["volumeMounts"]}
    key_file = plain_env(server["spec"]["containers"][0])["S1_API_KEY_FILE"]
    assert key_file.startswith(mounts["api-keys"] + "/")
    assert mounts["model-cache"] == "/home/s1/.cache/huggingface"  # the image's HF_HOME
    claim = volumes["model-cache"]["persistentVolumeClaim"]["claimName"]
    assert claim in {d["metadata"]["name"] for d in find(docs, "PersistentVolumeClaim")}


# ------------------------------------------------------------------------------ metrics
def defined_metric_series() -> set[str]:
    """Series names our code exports (s1_*), with the _total/_bucket suffixes."""
    from prometheus_client import REGISTRY

    import server.api.metrics  # noqa: F401  (registers the s1_* metrics)

    return {s.name for family in REGISTRY.collect() for s in family.samples
            if s.name.startswith("s1_")} | {f.name for f in REGISTRY.collect()
                                           if f.name.startswith("s1_")}


def vllm_defines(name: str) -> bool:
    """vLLM's metric names are string literals in its v1 metrics code."""
    import vllm

    source = Path(vllm.__file__).parent / "v1" / "metrics"
    return any(f'"{name}"' in p.read_text() for p in source.rglob("*.py"))


def autoscaler_queries(docs: list[dict]) -> list[str]:
    return [t["metadata"]["query"] for d in find(docs, "ScaledObject")
            for t in d["spec"]["triggers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_metrics_are_exported(overlay):
    from tests.helpers import promql_metric_names

    docs = rendered(overlay)
    queries = autoscaler_queries(docs)
    names = set().union(*(promql_metric_names(q) for q in queries))
    assert names == {"vllm:num_requests_waiting", "s1_requests_in_flight"}
    ours = defined_metric_series()
    for name in names:
        assert name in ours if name.startswith("s1_") else vllm_defines(name), name
    for query in queries:
        # Not the job label: it exists only under one scrape set-up (tests/test_k8s_scaleout).
        assert f'namespace="{NAMESPACE}"' in query and "job=" not in query, query
    assert vllm_defines("vllm:num_requests_waiting") and not vllm_defines("vllm:no_such_metric")


def test_dashboard_and_datasource_config_maps():
    docs = rendered("1xh100")
    maps = {d["metadata"]["name"]: d for d in find(docs, "ConfigMap")}
    dashboard = maps["s1-serve-grafana-dashboard"]
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert dashboard["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
    source = yaml.safe_load(maps["s1-serve-grafana-datasource"]["data"]["s1-serve-datasource.yaml"])
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]
            for t in p.get("targets", [])}
    assert uids == {source["datasources"][0]["uid"]}
    assert re.search(r"^http://[\w.-]+:9090$", source["datasources"][0]["url"])
