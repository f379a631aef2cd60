"""The monitoring configuration and the deploy/ scripts, offline: Prometheus scrapes the
server services under their compose aliases and ports, Grafana's provisioning (data
source, dashboard provider, home dashboard) fits together, the dashboard shows the
required signals, PromQL metric names are extracted right, and deploy/requirements.py
and deploy/healthcheck.py behave. That the metrics named exist on a live server is
test_deploy_live_metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.container_config import (
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_DIR,
    ROOT,
    SERVER_SERVICES,
    compose_env,
    dashboard_exprs,
    load_compose,
)
from tests.deploy_helpers import load_deploy_script
from tests.helpers import promql_metric_names


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

