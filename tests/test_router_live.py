"""The prefix-aware router of deploy/k8s/addons/prefix-routing in front of a real s1-serve.

vllm-router (the version the Dockerfile's router target pins, from PyPI into .cache/tools)
runs with the addon's routing policy against the session's API server, with a static worker
list instead of Kubernetes discovery. What a cluster would otherwise have to show: requests
and their API key pass through the router (a key the server refuses stays refused), and the
thinking budget still applies.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import API_KEY, API_MODEL
from tests.deploy_helpers import named, rendered
from tests.server_proc import free_port, wait_until


@pytest.fixture(scope="module")
def router(vllm_router, api_server, tmp_path_factory):
    docs = rendered("examples/1xh100-extras")
    args = named(docs, "Deployment", "s1-serve-router")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    policy = next(a.split("=", 1)[1] for a in args if a.startswith("--policy="))
    port = free_port()
    log_path = tmp_path_factory.mktemp("router") / "router.log"
    log = log_path.open("w")
    proc = subprocess.Popen([str(vllm_router.parent / "vllm-router"), "--host", "127.0.0.1",
                             "--port", str(port), "--policy", policy,
                             "--prometheus-port", str(free_port()),
                             "--worker-urls", api_server.base_url],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, 120, "the router to check its worker and listen", poll=0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.engine
def test_router_passes_requests_and_keys_through(router):
    body = {"model": API_MODEL, "messages": [{"role": "user", "content": "How many r?"}],
            "thinking_max": 4, "max_tokens": 16, "temperature": 0}
    with httpx.Client(base_url=router, timeout=120) as client:
        for _ in range(2):  # the second one has the first one's prefix cached
            reply = client.post("/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"})
            assert reply.status_code == 200, reply.text
            usage = reply.json()["usage"]
            assert usage["completion_tokens_details"]["reasoning_tokens"] <= 4
        refused = client.post("/v1/chat/completions", json=body,
                              headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401, refused.text
