"""Against a live server (the session's API server): every metric the Grafana dashboard,
the Prometheus rules and deploy/k8s's autoscalers and alerts name is one the server
exports, and the container health check (deploy/healthcheck.py) passes."""

from __future__ import annotations

import httpx
import pytest

from tests.container_config import PROMETHEUS_SYNTHETIC, dashboard_exprs, prometheus_exprs
from tests.deploy_helpers import k8s_metric_names, load_deploy_script
from tests.helpers import promql_metric_names


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
