"""s1-serve's front (server/api/front.py) as a unit: the states it answers in, and what it
tells ``python -m server`` about the engine when the server stops.

The app behind it is a two-route Starlette app and the engine a plain object with vLLM's
``errored`` flag: the front reads nothing else of them. The real front before vLLM's
real app is covered by the server tests (tests/test_server_errors.py, test_engine_death.py).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from server.api.front import Front


def inner_app() -> Starlette:
    async def hello(request):  # noqa: ANN001, ANN202
        return PlainTextResponse("from vLLM's app")

    async def echo(request):  # noqa: ANN001, ANN202
        return PlainTextResponse(str(len(await request.body())))

    return Starlette(routes=[Route("/health", hello), Route("/v1/models", hello),
                             Route("/echo", echo, methods=["POST"])])


def front_with(load, **kwargs) -> Front:  # noqa: ANN001
    options = {"keys": [], "exempt": True, "max_body": 1024, **kwargs}
    return Front(load, **options)


def test_loading_then_serving():
    release = asyncio.Event()
    stops: list[float | None] = []
    engine = SimpleNamespace(errored=False, shutdown=lambda timeout=None: stops.append(timeout),
                             vllm_config=SimpleNamespace(shutdown_timeout=0))

    async def load(front: Front):  # noqa: ANN202
        await release.wait()
        return engine, inner_app()

    front = front_with(load)
    with TestClient(front) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "loading",
                                                               "detail": None}
        busy = client.get("/v1/models")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert "loading" in busy.json()["error"]["message"]
        assert client.get("/version").json()["engine"] is None
        assert "s1_requests_total" in client.get("/metrics").text
        client.portal.call(release.set)
        while front.app is None:  # the load task runs on
            client.portal.call(lambda: asyncio.sleep(0.01))
        assert client.get("/v1/models").text == "from vLLM's app"
        assert client.get("/health").text == "from vLLM's app"
    assert front.died is False  # a plain stop: `python -m server` exits 0
    assert stops == [0]  # vllm serve's --shutdown-timeout, not vLLM's 5 s default


def test_dead_engine_is_reported_and_remembered_at_stop():
    engine = SimpleNamespace(errored=False, shutdown=lambda timeout=None: None)

    async def load(front: Front):  # noqa: ANN202
        return engine, inner_app()

    front = front_with(load, exit_on_death=False)  # the watchdog stays its hand
    with TestClient(front) as client:
        while front.app is None:
            client.portal.call(lambda: asyncio.sleep(0.01))
        engine.errored = True
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "dead"
        gone = client.get("/v1/models")
        assert gone.status_code == 503 and "stopped" in gone.json()["error"]["message"]
    assert front.died is True  # `python -m server` exits 3 (with the setting on)


def test_failed_load_asks_for_exit_3():
    exits: list[int] = []

    async def load(front: Front):  # noqa: ANN202
        raise OSError("no such model")

    front = front_with(load)
    front.request_exit = exits.append
    with TestClient(front) as client:
        while not exits:
            client.portal.call(lambda: asyncio.sleep(0.01))
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "dead", "detail": "OSError: no such model"}
    assert exits == [3]


def test_request_id_body_limit_and_operational_key():
    front = front_with(None, keys=["k"], exempt=False, max_body=16)
    front.app = inner_app()
    client = TestClient(front)
    r = client.post("/echo", content=b"x" * 10, headers={"x-request-id": "a b/c<d>"})
    assert r.text == "10" and r.headers["x-request-id"] == "abcd"
    assert client.post("/echo", content=b"x" * 17).status_code == 413
    chunked = client.post("/echo", content=iter([b"x" * 10, b"x" * 10]))
    assert chunked.status_code == 413  # counted as it arrives, no Content-Length
    assert client.get("/health").status_code == 401  # --no-auth-exempt-health
    assert client.get("/health", headers={"Authorization": "Bearer k"}).status_code == 200
    assert client.options("/health").status_code != 401  # a preflight carries no key


def test_the_arrival_is_taken_before_the_body_is_read(monkeypatch):
    """thinking_deadline_ms counts from the request's arrival at the front, on the
    deadline's own clock, not from when vLLM's route has read and parsed the body."""
    from server.api import deadline

    ticks = iter([100.0, 200.0, 300.0])
    monkeypatch.setattr(deadline, "CLOCK", lambda: next(ticks))
    seen: list[float] = []

    async def arrival(request):  # noqa: ANN001, ANN202
        await request.body()
        seen.append(request.state.s1_arrival)
        return PlainTextResponse("ok")

    front = front_with(None)
    front.app = Starlette(routes=[Route("/v1/chat/completions", arrival, methods=["POST"])])
    assert TestClient(front).post("/v1/chat/completions", content=b"{}").text == "ok"
    assert seen == [100.0] and deadline.ARRIVAL == "s1_arrival"


def test_vllm_plugins_names_s1_and_keeps_the_rest():
    """``python -m server`` allowlists its endpoint plugin without dropping the others:
    unset means every plugin to vLLM, so every installed one is named."""
    from importlib.metadata import entry_points

    from server.__main__ import plugins_with_s1

    assert plugins_with_s1("a, b") == "a,b,s1"
    assert plugins_with_s1("s1") == "s1"
    installed = {ep.name for ep in entry_points(group="vllm.general_plugins")}
    assert set(plugins_with_s1(None).split(",")) >= installed | {"s1"}


def test_keep_alive_follows_vllms_variable(monkeypatch):
    import pytest

    from server.__main__ import keep_alive_s

    monkeypatch.delenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", raising=False)
    assert keep_alive_s() == 30  # s1-serve's default (vLLM's is 5 s)
    monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5")
    assert keep_alive_s() == 5
    for bad in ("five", "-1"):
        monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", bad)
        with pytest.raises(SystemExit, match="whole number of seconds"):
            keep_alive_s()
