"""Engine death: the real server (subprocess, tiny model) with its engine core killed.

vLLM's engine core is a separate process. When it dies the server cannot serve again, so
with ``exit_on_engine_death`` (the default) it must end the in-flight requests with
errors in OpenAI's shape, refuse new ones, and exit non-zero so that a restart policy
(Docker's ``restart: unless-stopped``) brings it back. With the setting off it stays up and
``/health`` answers 503. A model that cannot load takes the same exit path.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from server.api.watchdog import ENGINE_DEATH_EXIT_CODE
from tests.server_proc import ServerProcess, engine_core, wait_until
from tests.stream_reader import StreamRecord, read_in_thread

pytestmark = pytest.mark.engine
MSG = [{"role": "user", "content": "How many r in raspberry?"}]
# Far longer than the test needs to freeze the engine once every stream has its first
# token (see the test; the server gets a 4096-token context).
LONG = {"messages": MSG, "max_tokens": 4000, "ignore_eos": True}
STREAMS = 3
# Bounds a hang only (a shared 2-core box is slow): the watchdog's poll and hard-exit
# times are unit-tested in tests/test_units.py, not measured here.
EXIT_BOUND_S = 120.0


def post_once(base_url: str, out: dict) -> None:
    try:
        r = httpx.post(base_url + "/v1/chat/completions", json=LONG, timeout=120)
        out["status"], out["body"] = r.status_code, r.json()
    except httpx.HTTPError as exc:
        out["transport_error"] = repr(exc)


def assert_engine_error(error: dict, in_flight: bool = False) -> None:
    """A request in flight when the engine core dies gets vLLM's answer (its serving
    classes: a 500 naming the EngineCore, as vLLM's server); a new one is refused by
    s1-serve with a 503 before it reaches them."""
    if in_flight:
        assert error["type"] == "InternalServerError" and error["code"] == 500, error
        assert "EngineCore" in error["message"], error
    else:
        assert error["type"] == "service_unavailable_error" and error["code"] == 503, error
        assert "engine" in error["message"], error


def let_streams_start(core, streams: list[StreamRecord]) -> None:
    """Run the frozen engine core in short bursts until every stream has its first event,
    and leave it frozen. A burst ends at the first new event or after 50 ms of wall time,
    whichever comes first, so a starved test process cannot let the engine run on to the
    streams' ends (4,000 tokens each); between bursts the engine is stopped while the
    outputs it made reach the clients."""
    for _ in range(2000):  # bounds a hang only
        waiting = [rec for rec in streams if not rec.started.is_set()]
        if not waiting:
            return
        core.resume()
        waiting[0].started.wait(0.05)
        core.suspend()
        for rec in waiting:
            rec.started.wait(0.5)
    raise AssertionError(f"a stream produced no token: {streams}")


def test_engine_death_ends_requests_and_exits_non_zero(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--shutdown-grace-s", "30", "--max-model-len", "4096")
    try:
        server.wait_ready()
        # Freeze the engine core first: every request is admitted and queued while it is
        # stopped; it then runs only in short bursts until each stream has its first
        # event, so nothing can finish before the kill (4,000 tokens each), however
        # slowly this process gets the CPU.
        core = engine_core(server.proc)
        core.suspend()
        plain: dict = {}
        plain_thread = threading.Thread(target=post_once, args=(server.base_url, plain))
        plain_thread.start()
        streams = [StreamRecord() for _ in range(STREAMS)]
        threads = [read_in_thread(server.base_url, {**LONG, "stream": True}, rec, 120)
                   for rec in streams]
        wait_until(lambda: server.metric("s1_requests_in_flight") == STREAMS + 1, 60,
                   "all requests (the non-streamed one included) in flight")
        assert not any(rec.started.is_set() for rec in streams)
        let_streams_start(core, streams)
        for rec in streams:
            assert not rec.ended.is_set(), f"a stream ended before the freeze: {rec}"
        assert server.metric("s1_requests_in_flight") == STREAMS + 1

        core.kill()  # SIGKILL (a stopped process dies too): no chance to say goodbye

        for t in threads:
            t.join(60)
        for rec in streams:
            assert rec.status == 200 and rec.transport_error is None, rec
            assert rec.events and "error" in rec.events[-1], f"no error event at the end: {rec}"
            assert_engine_error(rec.events[-1]["error"], in_flight=True)
            assert not rec.finished_choices(), f"a killed stream must not look finished: {rec}"
        plain_thread.join(60)
        # vLLM's class answers it (500), or raises the engine's death to s1-serve (503).
        assert plain.get("status") in (500, 503), plain
        assert_engine_error(plain["body"]["error"], in_flight=plain["status"] == 500)

        # Engine dead, process maybe still flushing: a new request is refused either way.
        try:
            r = httpx.post(server.base_url + "/v1/chat/completions",
                           json={"messages": MSG, "max_tokens": 5}, timeout=10)
            # Refused by s1-serve (503) once it knows, else answered by vLLM's class (500).
            assert r.status_code in (500, 503), r.text
            assert_engine_error(r.json()["error"], in_flight=r.status_code == 500)
        except httpx.TransportError:
            pass  # already gone

        code = server.proc.wait(EXIT_BOUND_S)
        assert code == ENGINE_DEATH_EXIT_CODE, server.log_path.read_text()[-4000:]
        log = server.log_path.read_text()
        assert "the inference engine died" in log and "exiting with status 3" in log, log[-4000:]
    finally:
        server.stop()


def test_engine_death_with_exit_off_stays_up_and_reports_dead(tiny_s1_open):
    server = ServerProcess(tiny_s1_open, "--no-exit-on-engine-death")
    try:
        server.wait_ready()
        engine_core(server.proc).kill()
        # The watchdog logs this where it would otherwise stop the server.
        wait_until(lambda: "staying up" in server.log_path.read_text(), 30,
                   "the watchdog to notice the death")
        assert server.proc.poll() is None, "the server exited although the setting is off"
        r = httpx.get(server.base_url + "/health", timeout=10)
        assert r.status_code == 503 and r.json()["status"] == "dead", r.text
        r = httpx.post(server.base_url + "/v1/chat/completions",
                       json={"messages": MSG, "max_tokens": 5}, timeout=10)
        assert r.status_code == 503, r.text
        assert_engine_error(r.json()["error"])
    finally:
        assert server.stop() == 0, "SIGTERM must still exit 0"


def test_engine_that_cannot_load_exits_non_zero(tmp_path: Path):
    server = ServerProcess(tmp_path / "no-such-model")  # an empty path: the load fails
    try:
        code = server.proc.wait(300)
        log = server.log_path.read_text()
        assert code == ENGINE_DEATH_EXIT_CODE, log[-4000:]
        assert "the engine failed to start" in log, log[-4000:]
    finally:
        server.stop()
