"""Whether the Kubernetes layouts would form beyond one pod, checked on the renders.

No cluster runs here, so the controllers' rules that decided it are encoded as tests:
- LeaderWorkerSet creates its headless Service, named after the set, only when no Service of
  that name exists; LWS_LEADER_ADDRESS (<set>-<group>.<set>.<namespace>) resolves through it,
  also before the leader is Ready; RecreateGroupAfterStart lets a pod restart while the group
  is still forming;
- a volume's access mode against how many pods, on how many nodes, mount it;
- the grace and probe arithmetic against the request timeout;
- every metric an autoscaler or alert names is exported (tests/test_deploy_live_metrics.py checks that on a
  running server through tests/deploy_helpers.k8s_metric_names) and reaches Prometheus through the shipped
  scrape configuration, whichever of the two is used;
- the autoscalers' thresholds follow each layout's memory plan.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy_helpers import (
    EXAMPLES,
    K8S,
    NAMESPACE,
    OVERLAYS,
    SHAPES,
    DockerIgnore,
    find,
    k8s_metric_names,
    load_deploy_script,
    matches,
    memory_plan,
    named,
    plain_env,
    pod_templates,
    rendered,
    server_pod,
)

ROOT = K8S.parents[1]
# H100 80 GB as vLLM sees it; the thresholds' unit: one request of 8k tokens.
H100_VISIBLE = int(79.1 * 2**30)
REQUEST_TOKENS = 8192
MAX_NUM_SEQS = 256  # the server's default, which no overlay changes
MULTINODE = [o for o in OVERLAYS if SHAPES[o][4] > 1]


def workload(docs: list[dict]) -> dict:
    """The serving workload (not the router or the pre-pull DaemonSet)."""
    found = [d for d in docs if d["kind"] in ("Deployment", "LeaderWorkerSet")
             and d["metadata"]["name"].startswith("s1-serve")
             and d["metadata"]["name"] != "s1-serve-router"]
    assert len(found) == 1
    return found[0]


def max_replicas(docs: list[dict]) -> int:
    scalers = [d["spec"]["maxReplicaCount"] for d in find(docs, "ScaledObject")]
    scalers += [d["spec"]["maxReplicas"] for d in find(docs, "HorizontalPodAutoscaler")]
    return max([workload(docs)["spec"].get("replicas", 1), *scalers])


# ------------------------------------------------------------------------------ multi-node
@pytest.mark.parametrize("overlay", MULTINODE)
def test_lws_can_create_its_headless_service(overlay):
    docs = rendered(overlay)
    lws = named(docs, "LeaderWorkerSet", workload(docs)["metadata"]["name"])
    name = lws["metadata"]["name"]
    # LWS's rule: the headless Service is <set name>, created only if absent.
    assert name not in {d["metadata"]["name"] for d in find(docs, "Service")}
    # The leader's address, as LWS builds it, is a name in that headless Service's domain.
    address = f"{name}-0.{name}.{NAMESPACE}"
    assert address.split(".")[1] == name and len(name) <= 63
    assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupAfterStart"
    # LeaderReady would wait for a leader that is Ready only once its worker has joined.
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    # The client Service reaches leaders only (workers serve no HTTP).
    service = named(docs, "Service", "s1-serve")
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"


@pytest.mark.parametrize("overlay", MULTINODE)
def test_group_commands_and_shared_engine_settings(overlay):
    multinode = load_deploy_script("multinode")
    docs = rendered(overlay)
    templates = pod_templates(docs)
    leader, worker = (templates[r]["spec"]["containers"][0] for r in ("leader", "worker"))
    script = "/opt/s1-serve/deploy/multinode.py"
    assert leader["command"] == ["python3", script, "leader"]
    assert worker["command"] == ["python3", script, "worker"]
    size = workload(docs)["spec"]["leaderWorkerTemplate"]["size"]
    # The commands both pods would run, with what LWS and the downward API inject.
    injected = {"LWS_LEADER_ADDRESS": f"s1-serve-group-0.s1-serve-group.{NAMESPACE}",
                "LWS_GROUP_SIZE": str(size), "VLLM_HOST_IP": "10.0.0.5"}
    leader_env = {**plain_env(leader), **injected, "LWS_WORKER_INDEX": "0"}
    worker_env = {**plain_env(worker), **injected, "LWS_WORKER_INDEX": "1"}
    leader_cmd, worker_cmd = (multinode.leader_command(leader_env),
                              multinode.worker_command(worker_env))
    assert shlex.join(leader_cmd).startswith(f"s1-serve --nnodes {size} --node-rank 0")
    assert worker_cmd[worker_cmd.index("--master-addr") + 1] == injected["LWS_LEADER_ADDRESS"]
    # Every engine-shaping variable equal on both pods: vLLM builds the engine on each node.
    shaping = {*multinode.ENGINE_FLAGS, *multinode.BOOL_FLAGS, "S1_MODEL", "MODEL_REVISION",
               "HF_HUB_OFFLINE"}
    assert {k: v for k, v in plain_env(leader).items() if k in shaping} == {
        k: v for k, v in plain_env(worker).items() if k in shaping}
    tp, pp = (int(plain_env(worker)[k]) for k in ("S1_TENSOR_PARALLEL_SIZE",
                                                    "S1_PIPELINE_PARALLEL_SIZE"))
    assert (tp * pp) % size == 0  # vLLM: --nnodes must divide the world size
    # The leader listens on the store port the worker dials; the policy lets the group talk.
    port = int(worker_cmd[worker_cmd.index("--master-port") + 1])
    assert port in [p["containerPort"] for p in leader["ports"]]
    policy = named(docs, "NetworkPolicy", "s1-serve")
    group = [r for r in policy["spec"]["ingress"] if "from" in r and "ports" not in r]
    assert any(matches(f["podSelector"]["matchLabels"], templates["worker"]["metadata"]["labels"])
               for r in group for f in r["from"])
    # The worker stops after its leader has drained its requests.
    drain = multinode._number(plain_env(worker), "MULTINODE_DRAIN_S", float, 620.0, minimum=0)
    leader_stop = (int(leader["lifecycle"]["preStop"]["exec"]["command"][1])
                   + float(plain_env(leader)["S1_SHUTDOWN_GRACE_S"]) + 5)
    assert worker["lifecycle"]["preStop"]["exec"]["command"][-1] == "drain"
    assert drain >= leader_stop
    assert templates["worker"]["spec"]["terminationGracePeriodSeconds"] >= drain + 10


def test_rdma_overlay_wires_the_hcas():
    plain, rdma = rendered("2x8xh100-multinode"), rendered("2x8xh100-multinode-rdma")
    for role, template in pod_templates(rdma).items():
        container = template["spec"]["containers"][0]
        assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
        assert container["resources"]["limits"]["rdma/rdma_shared_device_a"] == "1"
        assert plain_env(container)["NCCL_IB_DISABLE"] == "0"
        assert template["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
        assert "/dev/shm" in [m["mountPath"] for m in container["volumeMounts"]], role
    for template in pod_templates(plain).values():
        assert "NCCL_IB_HCA" not in plain_env(template["spec"]["containers"][0])


# ------------------------------------------------------------------------------ storage
@pytest.mark.parametrize("overlay", OVERLAYS + EXAMPLES)
def test_claims_fit_the_pods_that_mount_them(overlay):
    docs = rendered(overlay)
    claims = {d["metadata"]["name"]: d for d in find(docs, "PersistentVolumeClaim")}
    pods_per_replica = SHAPES.get(overlay, (0, 0, 0, 0, 1))[4]
    mounting = max_replicas(docs) * pods_per_replica
    for role, template in pod_templates(docs).items():
        for volume in template["spec"]["volumes"]:
            if "persistentVolumeClaim" not in volume:
                continue
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]
            modes = set(claim["spec"]["accessModes"])
            # More than one pod, possibly on other nodes: ReadWriteOnce would fail with a
            # multi-attach error at the second node.
            if mounting > 1:
                assert modes & {"ReadWriteMany", "ReadOnlyMany"}, (role, claim["metadata"]["name"])
            assert claim["spec"].get("storageClassName"), "name the class, not the default"
    assert mounting > 1  # every layout can scale out (or spans nodes)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_download_feeds_offline_serving_pods(overlay):
    docs = rendered(overlay)
    job = named(docs, "Job", "s1-serve-model-download")["spec"]["template"]["spec"]
    job_env = plain_env(job["containers"][0])
    assert job["containers"][0]["command"][-1] == "download"
    job_claims = {v["persistentVolumeClaim"]["claimName"] for v in job["volumes"]
                  if "persistentVolumeClaim" in v}
    for role, template in pod_templates(docs).items():
        spec = template["spec"]
        wait = [c for c in spec["initContainers"] if c["command"][-1] == "wait"]
        assert len(wait) == 1, role
        main = spec["containers"][0]
        env = plain_env(main)
        for name in ("S1_MODEL", "MODEL_REVISION"):
            assert env[name] == job_env[name] == plain_env(wait[0])[name], (role, name)
        assert env["HF_HUB_OFFLINE"] == "1", role
        mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        claim_of = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                    if "persistentVolumeClaim" in v}
        assert claim_of["model-cache"] in job_claims
        assert mounts["model-cache"] == "/home/s1/.cache/huggingface"  # the image's HF_HOME
        assert mounts["compile-cache"] == "/home/s1/.cache/vllm"  # VLLM_CACHE_ROOT
    # vLLM gets the revision: in args (Deployment; $(VAR) is expanded by the kubelet) or
    # from multinode.py (LeaderWorkerSet).
    main = server_pod(docs)["spec"]["containers"][0]
    if workload(docs)["kind"] == "Deployment":
        assert main["args"] == ["--revision", "$(MODEL_REVISION)"]


def test_scripts_the_manifests_run_are_in_the_image():
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    scripts = set()
    for overlay in OVERLAYS + EXAMPLES:
        for doc in rendered(overlay):
            scripts |= set(re.findall(r"/opt/s1-serve/(deploy/\w+\.py)", yaml.safe_dump(doc)))
    assert scripts == {"deploy/multinode.py", "deploy/download_model.py"}
    for script in scripts:
        assert (ROOT / script).is_file() and not ignore.excluded(script), script


# ------------------------------------------------------------------------------ placement
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_placement_and_rollout(overlay):
    docs = rendered(overlay)
    for role, template in pod_templates(docs).items():
        spec = template["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
            spec["tolerations"], role
        assert spec["runtimeClassName"] == "nvidia"
    work = workload(docs)
    if work["kind"] == "Deployment":
        rolling = work["spec"]["strategy"]["rollingUpdate"]
        spread = work["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname",
                                                     "topology.kubernetes.io/zone"}
        assert all(matches(c["labelSelector"]["matchLabels"],
                           work["spec"]["template"]["metadata"]["labels"]) for c in spread)
        assert work["spec"]["progressDeadlineSeconds"] >= 30 * 60
    else:
        rolling = work["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)  # no downtime


# ------------------------------------------------------------------------------ autoscaling
def expected_thresholds(overlay: str) -> tuple[int, int]:
    """(waiting, in flight) per replica: the rule in addons/autoscaling/scaledobject.yaml."""
    _, dp, _, _, _ = SHAPES[overlay]
    kv_tokens = memory_plan(overlay, H100_VISIBLE).kv_tokens
    capacity = min(MAX_NUM_SEQS * dp, kv_tokens // REQUEST_TOKENS)
    return max(1, capacity // 8), math.floor(0.75 * capacity)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_follows_the_layout_and_fails_loudly(overlay):
    docs = rendered(overlay)
    scaled = named(docs, "ScaledObject", "s1-serve")["spec"]
    triggers = {t["name"]: t for t in scaled["triggers"]}
    assert (int(triggers["waiting"]["metadata"]["threshold"]),
            int(triggers["in-flight"]["metadata"]["threshold"])) == expected_thresholds(overlay)
    for trigger in triggers.values():
        assert trigger["metricType"] == "AverageValue"  # per replica; fallback needs it
        assert trigger["metadata"]["ignoreNullValues"] == "false"  # empty answer = error
        query = trigger["metadata"]["query"]
        assert "job=" not in query and f'namespace="{NAMESPACE}"' in query
        assert re.search(r"max by \(pod[,)]", query), "one series per pod whoever scrapes it"
    # A broken Prometheus must not scale the fleet down: keep what runs.
    assert scaled["fallback"]["behavior"] == "currentReplicasIfHigher"
    assert scaled["fallback"]["failureThreshold"] >= 1
    assert scaled["minReplicaCount"] >= 1  # never to zero: a cold start takes many minutes
    assert scaled["minReplicaCount"] <= workload(docs)["spec"].get("replicas", 1) \
        <= scaled["maxReplicaCount"]


def test_hpa_alternative_matches_the_adapter_rules():
    docs = rendered("examples/1xh100-hpa")
    assert not find(docs, "ScaledObject")  # one autoscaler, not two
    hpa = named(docs, "HorizontalPodAutoscaler", "s1-serve")["spec"]
    target = workload(docs)
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == (
        target["kind"], target["metadata"]["name"])
    values = yaml.safe_load((K8S / "addons/autoscaling-hpa/prometheus-adapter-values.yaml")
                            .read_text())
    rules = {r["name"]["as"]: r for r in values["rules"]["custom"]}
    waiting, in_flight = expected_thresholds("1xh100")
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"]}
    assert set(targets) == set(rules)
    assert targets["vllm_num_requests_waiting"]["averageValue"] == str(waiting)
    assert targets["s1_requests_in_flight"]["averageValue"] == str(in_flight)
    for name, rule in rules.items():
        series = rule["seriesQuery"].split("{")[0]
        assert re.fullmatch(rule["name"]["matches"], series), name
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert 'pod!=""' in rule["seriesQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_prometheus_rule_equals_the_compose_alerts():
    compose = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    for overlay in OVERLAYS:
        rule = named(rendered(overlay), "PrometheusRule", "s1-serve")
        assert rule["spec"]["groups"] == compose, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shipped_scrape_config_reaches_the_serving_pods(overlay):
    """Both ways the queries' data arrive: the ServiceMonitor (Service -> pods, port http,
    /metrics) and pod annotations; either attaches the namespace and pod labels they use."""
    docs = rendered(overlay)
    server = server_pod(docs)
    container = server["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    labels = dict(server["metadata"]["labels"])
    if workload(docs)["kind"] == "LeaderWorkerSet":
        labels["leaderworkerset.sigs.k8s.io/worker-index"] = "0"
    monitor = named(docs, "ServiceMonitor", "s1-serve")["spec"]
    services = [s for s in find(docs, "Service")
                if matches(monitor["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in services] == ["s1-serve"]  # job="s1-serve"
    service = services[0]["spec"]
    assert matches(service["selector"], labels)
    endpoint = monitor["endpoints"][0]
    port = next(p for p in service["ports"] if p["name"] == endpoint["port"])
    assert ports[port["targetPort"]] == 8000 and endpoint["path"] == "/metrics"
    notes = server["metadata"]["annotations"]
    assert (notes["prometheus.io/scrape"], notes["prometheus.io/port"],
            notes["prometheus.io/path"]) == ("true", "8000", "/metrics")


def test_k8s_metric_names_are_collected():
    names = k8s_metric_names()
    assert {"vllm:num_requests_waiting", "s1_requests_in_flight", "s1_requests_total",
            "up"} <= set(names)


# ------------------------------------------------------------------------------ routing
def router_args(python: Path, args: list[str]) -> dict:
    """RouterArgs as the router's own command-line parser makes them (nothing is started)."""
    code = ("import dataclasses, json, sys\n"
            "from vllm_router.launch_router import parse_router_args\n"
            "print(json.dumps(dataclasses.asdict(parse_router_args(sys.argv[1:])), default=str))")
    out = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_router_arguments_are_the_routers(vllm_router):
    docs = rendered("examples/1xh100-extras")
    router = named(docs, "Deployment", "s1-serve-router")["spec"]["template"]
    container = router["spec"]["containers"][0]
    parsed = router_args(vllm_router, container["args"])
    assert parsed["policy"] == "cache_aware" and parsed["service_discovery"] is True
    serving = server_pod(docs)
    assert parsed["selector"] and matches(parsed["selector"], serving["metadata"]["labels"])
    assert parsed["service_discovery_namespace"] == NAMESPACE
    assert parsed["service_discovery_port"] == 8000
    assert parsed["port"] == next(p["containerPort"] for p in container["ports"]
                                  if p["name"] == "http")
    timeout = float(plain_env(serving["spec"]["containers"][0])["S1_REQUEST_TIMEOUT_S"])
    assert parsed["request_timeout_secs"] > timeout
    # A wrong flag fails in the same parser (the check can fail).
    out = subprocess.run([str(vllm_router), "-c",
                          "from vllm_router.launch_router import parse_router_args; "
                          "parse_router_args(['--policy', 'prefix'])"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "invalid choice" in out.stderr
    # It may list and watch pods in its namespace, and nothing more.
    sa = router["spec"]["serviceAccountName"]
    binding = named(docs, "RoleBinding", "s1-serve-router")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa,
                                    "namespace": NAMESPACE}]
    role = named(docs, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]
    assert named(docs, "Service", "s1-serve-router")["spec"]["ports"][0]["targetPort"] == "http"


def test_readme_sizing_and_thresholds_are_the_computed_ones():
    readme = (ROOT / "docs" / "deployment.md").read_text()
    section = readme[readme.index("**Sizing**"):readme.index("**What was validated")]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| s1.1-32B")]
    layouts = {"1 × 1 × 1": ("1xh100", 1), "8 × 1 × 1": ("8xh100-tp8", 1),
               "4 × 1 × 2": ("8xh100-tp4x2", 2), "8 × 2 × 1": ("2x8xh100-multinode", 1)}
    assert [r[3] for r in rows] == list(layouts)
    for row in rows:
        overlay, replicas = layouts[row[3]]
        plan = memory_plan(overlay, H100_VISIBLE)
        assert int(row[5].replace(",", "")) == plan.kv_tokens * replicas, row
        assert float(row[6]) == round(plan.full_sequences * replicas, 1), row
    names = {"1xh100": "1xh100", "tp8": "8xh100-tp8", "tp4x2": "8xh100-tp4x2",
             "multi-node": "2x8xh100-multinode"}
    line = re.search(r"  - 1xh100: .* waiting;.*", readme).group(0)
    found = re.findall(r"(1xh100|tp8|tp4x2|multi-node): (\d+)(?: in flight)? or (\d+)", line)
    assert [f[0] for f in found] == list(names)
    for name, in_flight, waiting in found:
        assert expected_thresholds(names[name]) == (int(waiting), int(in_flight)), name
