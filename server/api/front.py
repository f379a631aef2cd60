"""``s1-serve``'s outermost ASGI layer: the port answers at once, vLLM's app serves.

``vllm serve`` opens its port only once the model has loaded. s1-serve opens it at
once, so that a supervisor sees a live process: ``/health`` answers 503 ``loading``
(then ``dead`` if the load fails) and every other path 503 with ``Retry-After``. Once
the engine runs, :class:`Front` hands every request to vLLM's own app, built by vLLM's
``build_app`` and ``init_app_state`` from the same command line (with the s1 endpoint
plugin attached by vLLM itself, :mod:`server.api.plugin`); vLLM answers ``/health``
from then on. Around it, for every request, the front adds what vLLM has no flag for:
a request id (``x-request-id``, sanitised, on every response), the body-size limit
(413), the access log and the ``s1_requests_total`` counter, and, with
``--no-auth-exempt-health``, the API key on ``/health``, ``/metrics`` and ``/version``
(vLLM's own key check, ``--api-key``, guards ``/v1/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse, Response

from server.api import deadline
from server.api.deadline import ARRIVAL
from server.api.errors import APIError
from server.api.protocol import Health

logger = logging.getLogger(__name__)
access_log = logging.getLogger("s1.access")

KNOWN_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
               "/version", "/v1/responses", "/v1/messages", "/tokenize", "/detokenize",
               "/v1/chat/completions/batch"}
# What --no-auth-exempt-health guards beyond vLLM's /v1/... paths.
OPERATIONAL_PATHS = {"/health", "/metrics", "/version"}


class Front:
    """The ASGI app uvicorn serves; ``app`` is vLLM's once loaded (None before).

    ``load`` is a coroutine function that starts the engine and returns ``(engine,
    app)``; it runs as a task from the lifespan startup, so the port answers meanwhile.
    """

    def __init__(self, load: Any, *, keys: list[str], exempt: bool, max_body: int,
                 exit_on_death: bool = True) -> None:
        self.load = load
        self.exit_on_death = exit_on_death
        self.app: Any = None
        self.engine: Any = None
        self.load_error: str | None = None
        self.request_exit: Any = None  # set by `python -m server`: stop with a status
        self.keys = [k.encode() for k in keys]
        self.exempt = exempt
        self.max_body = max_body
        self._tasks: list[asyncio.Task] = []
        self._app_lifespan: Any = None
        self.died = False  # the engine was dead when the server stopped

    # ------------------------------------------------------------ lifecycle
    def engine_dead(self) -> bool:
        if self.load_error:
            return True
        return bool(self.engine is not None and getattr(self.engine, "errored", False))

    async def _load(self) -> None:
        try:
            self.engine, app = await self.load(self)
            self._app_lifespan = app.router.lifespan_context(app)
            await self._app_lifespan.__aenter__()
            self.app = app
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # failed: /health says so; the watchdog acts
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("the engine failed to start")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        from server.api.watchdog import watch_engine

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._tasks = [asyncio.create_task(self._load()),
                               asyncio.create_task(watch_engine(self, self.exit_on_death))]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown(self) -> None:
        self.died = self.engine_dead()  # before our own shutdown stops the engine
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._app_lifespan is not None:
            with contextlib.suppress(Exception):
                await self._app_lifespan.__aexit__(None, None, None)
        if self.engine is not None:
            # As `vllm serve`: its --shutdown-timeout (0: stop the engine processes at
            # once; in-flight requests had the server's grace period already), not vLLM's
            # 5 s default for a bare shutdown().
            config = getattr(self.engine, "vllm_config", None)
            self.engine.shutdown(timeout=getattr(config, "shutdown_timeout", None))

    # ------------------------------------------------------------- requests
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        rid = "".join(ch for ch in rid if ch.isalnum() or ch in "-_.")[:128] or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        # When the request arrived, for thinking_deadline_ms (its clock): before the body
        # is read and parsed, which under load waits for the event loop too.
        state[ARRIVAL] = deadline.now()
        path = scope.get("path", "")
        status = [500]
        started = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        try:
            error = self._check_key(path, headers, scope.get("method", "GET"))
            if error is None:
                receive, error = await self._check_body(headers, receive)
            if error is not None:
                await error.response(rid)(scope, receive, send_with_id)
            elif self.app is None and path in ("/version", "/metrics"):
                await _while_loading(path)(scope, receive, send_with_id)
            elif self.app is None or (self.engine_dead() and path not in ("/metrics",
                                                                          "/version")):
                await self._not_serving(path)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            from server.api import metrics

            endpoint = path if path in KNOWN_PATHS else "other"
            metrics.REQUESTS.labels(endpoint, str(status[0])).inc()
            # The access log: ids, path, status and time; never prompts, outputs or keys.
            access_log.info("%s %s %s %d %.3fs", rid, scope.get("method", ""), path, status[0],
                            time.perf_counter() - started)

    def _not_serving(self, path: str) -> Response:
        """While loading, or once the engine is dead (a failed load, or its process gone,
        with --no-exit-on-engine-death): /health says which; the rest is 503."""
        dead = self.engine_dead()
        if path == "/health":
            health = Health(status="dead", detail=self.load_error) if dead else \
                Health(status="loading")
            return JSONResponse(health.model_dump(), status_code=503)
        if dead:
            return APIError(503, "the inference engine has stopped; restart the server") \
                .response()
        return APIError(503, "the model is still loading; retry shortly (GET /health says "
                        "when it is ready)", headers={"Retry-After": "5"}).response()

    def _check_key(self, path: str, headers: dict[str, str], method: str) -> APIError | None:
        if not self.keys or self.exempt or path not in OPERATIONAL_PATHS or method == "OPTIONS":
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        ok = False
        for key in self.keys:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(given, key)
        if ok:
            return None
        return APIError(401, "missing or invalid API key; send 'Authorization: Bearer <key>'",
                        headers={"WWW-Authenticate": "Bearer"})

    async def _check_body(self, headers: dict[str, str], receive: Any) -> tuple[Any, APIError | None]:
        too_big = APIError(413, f"request body larger than {self.max_body} bytes")
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return receive, too_big
            except ValueError:
                return receive, APIError(400, "invalid Content-Length header")
            return receive, None
        # Chunked upload: read it here, within the limit, and replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                return receive, too_big
            chunks.append(body)
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return replay, None


def _while_loading(path: str) -> Response:
    """``/version`` (engine null) and ``/metrics`` (the s1 counters, the load's 503s)
    answer before vLLM's app exists."""
    if path == "/version":
        from server.engine.info import version_info

        return JSONResponse(version_info(None).model_dump())
    from server.api import metrics

    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def load_vllm_app(front: Front, args: Any, settings: Any, server: Any) -> tuple[Any, Any]:
    """Give vLLM's arguments what s1 needs and start the engine, in a thread; then vLLM's
    app and state exactly as ``vllm serve`` builds them (the s1 plugin attached by vLLM's
    plugin loader)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app

    from server.engine import loader

    # The processor, the reasoning parser and the template (reads the tokenizer, which may
    # be missing: a failed load like any other).
    await asyncio.to_thread(loader.configure_args, args, settings)
    engine = await asyncio.to_thread(loader.start_engine, args)
    front.engine = engine  # the watchdog sees an engine that dies from here on
    tasks = await engine.get_supported_tasks()
    root = logging.getLogger()
    level = root.level
    app = build_app(args, tasks, engine.model_config)
    # build_app's SageMaker bootstrap sets the root logger to SAGEMAKER_CONTAINER_LOG_LEVEL
    # (default ERROR), which silences every logger of ours; our --log-level stands.
    root.setLevel(level)
    app.state.server = server  # vLLM's error handlers stop the server on engine death
    await init_app_state(engine, app.state, args, tasks)
    serving = getattr(app.state, "serving", None)
    if serving is None:
        raise RuntimeError("vLLM did not load the s1 endpoint plugin: install s1-serve "
                           "(pip install -e .) so that its 'vllm.endpoint_plugins' entry "
                           "point exists")
    model = serving.model
    logger.info("ready: serving %s (context %d, thinking format %s)", model.name,
                model.max_model_len, model.format_tokens.fmt.name if model.format_tokens else "none")
    return engine, app
