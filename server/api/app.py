"""The FastAPI application: engine lifecycle, auth, limits, request ids, error shapes.

The HTTP port opens at once and answers ``/health`` with 503 while the engine
loads in a worker thread; generation routes answer 503 until it is ready. If the
engine fails to load or dies later, :mod:`server.api.watchdog` stops the process with a
non-zero status (unless ``exit_on_engine_death`` is off).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server import playground
from server.api import engine_hook, metrics, plugin
from server.api.errors import APIError
from server.api.watchdog import watch_engine
from server.engine import info as engine_info
from server.engine.loader import prepare_environment, start_engine
from server.settings import Settings

logger = logging.getLogger(__name__)
access_log = logging.getLogger("s1.access")

KNOWN_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
               "/version", "/v1/responses", "/v1/messages", "/tokenize", "/detokenize",
               "/v1/chat/completions/batch"}
# Operational endpoints, open with --auth-exempt-health (vLLM guards only /v1/... paths).
EXEMPT_PATHS = {"/health", "/metrics", "/version"}


def create_app(settings: Settings) -> FastAPI:
    keys = [k.encode() for k in settings.all_api_keys()]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.serving = None
        app.state.engine = None
        app.state.engine_info = None
        app.state.load_error = None
        prepare_environment(settings)
        loader = asyncio.create_task(_load(app, settings))
        watcher = asyncio.create_task(watch_engine(app, settings.exit_on_engine_death))
        try:
            yield
        finally:
            loader.cancel()
            watcher.cancel()
            engine = app.state.engine
            if engine is not None:
                engine.shutdown()

    app = FastAPI(title="s1-serve", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible server with per-request thinking budgets "
                  "(thinking_min / thinking_max) enforced inside vLLM.")
    app.state.serving = None
    app.state.engine = None
    app.state.engine_info = None
    app.state.load_error = None
    app.state.engine_dead = lambda: _engine_dead(app)
    from server.api.routes import router

    app.include_router(router)
    plugin.attach(app, [*plugin.vllm_routers(), _vllm_load_router()], only_existing=False)
    if settings.playground:
        playground.mount(app, settings)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own errors (unparsable body, unknown route, wrong method), in our shape.
        error = APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        return error.response(getattr(request.state, "request_id", None))

    # A body that fails vLLM's request model: vLLM's own answer (message, type, param).
    from vllm.entrypoints.serve.exception_handling.handlers.validation import (
        validation_exception_handler,
    )

    app.state.args = settings.vllm_args  # what vLLM's handlers read
    app.add_exception_handler(RequestValidationError, validation_exception_handler)

    from vllm.v1.engine.exceptions import EngineDeadError

    @app.exception_handler(EngineDeadError)
    async def _engine_gone(request: Request, exc: EngineDeadError) -> JSONResponse:
        # The engine core died between the readiness check and the engine call.
        return APIError(503, "the inference engine has stopped; restart the server").response(
            getattr(request.state, "request_id", None))

    from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMNotFoundError

    @app.exception_handler(GracefulHTTPError)
    async def _vllm_http_error(request: Request, exc: GracefulHTTPError) -> JSONResponse:
        # An error with its own status (our deadline's 504 on vLLM's routers, vLLM's 503).
        error = APIError(int(exc.http_status), exc.message)
        return error.response(getattr(request.state, "request_id", None))

    @app.exception_handler(VLLMClientError)
    async def _vllm_client_error(request: Request, exc: VLLMClientError) -> JSONResponse:
        # vLLM's serving classes (the surface delegated to them) reject bad input this way.
        status = 404 if isinstance(exc, VLLMNotFoundError) else 400
        message = str(exc.args[0]) if exc.args else str(exc)
        error = APIError(status, message, getattr(exc, "parameter", None))
        return error.response(getattr(request.state, "request_id", None))

    async def _raw_error(request: Request, exc: Exception) -> JSONResponse:
        # vLLM's serving classes still signal some bad input with these; vLLM's own server
        # answers 400, and so do we on the surface it serves. Our own code raises
        # APIError, so on our paths these remain bugs: 500. Registered per type so they
        # are handled inside the middleware stack (the access log sees the status).
        rid = getattr(request.state, "request_id", None)
        if getattr(request.state, "vllm_served", False):
            logger.info("request %s rejected by vLLM's serving layer: %r", rid, exc)
            return APIError(400, f"invalid request: {exc}").response(rid)
        return await _unexpected(request, exc)

    for raw in (ValueError, TypeError, OverflowError):
        app.add_exception_handler(raw, _raw_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", None)
        logger.exception("unhandled error in request %s", rid)
        return APIError(500, f"internal error (request id {rid})").response(rid)

    args = settings.vllm_args
    for path in args.middleware or ():  # vLLM's --middleware, as its server adds them
        import importlib
        import inspect

        module, name = path.rsplit(".", 1)
        extra = getattr(importlib.import_module(module), name)
        if inspect.isclass(extra):
            app.add_middleware(extra)
        elif inspect.iscoroutinefunction(extra):
            app.middleware("http")(extra)
        else:
            raise SystemExit(f"--middleware {path}: must name a class or an async function")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_credentials=args.allow_credentials,
                           allow_methods=args.allowed_methods, allow_headers=args.allowed_headers)
    app.add_middleware(GateMiddleware, keys=keys, exempt=settings.auth_exempt_health,
                       max_body=settings.max_body_bytes, open_page=settings.playground)
    return app


def _vllm_load_router() -> Any:
    """The server-load probe of vLLM's basic router (its /health, /version and metrics
    are ours). Not SageMaker's /ping and /invocations: importing their package
    reconfigures logging, which silenced our own loggers."""
    from fastapi import APIRouter
    from vllm.entrypoints.serve.instrumentator.basic import router as basic

    load = APIRouter()
    load.routes.extend(r for r in basic.routes if getattr(r, "path", None) == "/load")
    return load


async def _load(app: FastAPI, settings: Settings) -> None:
    try:
        engine = await asyncio.to_thread(start_engine, settings)
        app.state.engine = engine
        app.state.engine_info = engine_info.collect_and_log(engine.vllm_config)
        # The s1 state and engine hook as the endpoint plugin builds them on vLLM's server,
        # then vLLM's serving objects with s1's chat template and reasoning parser.
        serving = await plugin.attach_state(app.state, engine, settings)
        await engine_hook.init(app.state, engine, serving, settings)
        app.state.serving = serving
        model = serving.model
        logger.info("ready: serving %s (context %d, thinking format %s)", model.name,
                    model.max_model_len,
                    model.format_tokens.fmt.name if model.format_tokens else "none")
    except asyncio.CancelledError:
        raise
    except (Exception, SystemExit) as exc:  # failed: /health reports it; the watchdog acts
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        logger.exception("the engine failed to start")


def _engine_dead(app: FastAPI) -> bool:
    if app.state.load_error:
        return True
    engine = app.state.engine
    return bool(engine is not None and getattr(engine, "errored", False))


class GateMiddleware:
    """Pure ASGI (so streaming and disconnects pass through untouched): request id,
    API-key check in constant time, body-size limit, request counting."""

    def __init__(self, app: Any, keys: list[bytes], exempt: bool, max_body: int,
                 open_page: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.exempt = exempt
        self.max_body = max_body
        self.open_page = open_page  # the playground's page and files need no key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        rid = "".join(ch for ch in rid if ch.isalnum() or ch in "-_.")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
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
            error = self._check_auth(path, headers, scope.get("method", "GET"))
            if error is None:
                receive, error = await self._check_body(headers, receive)
            if error is not None:
                await error.response(rid)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            endpoint = path if path in KNOWN_PATHS else "other"
            metrics.REQUESTS.labels(endpoint, str(status[0])).inc()
            # The access log: ids, path, status and time; never prompts, outputs or keys.
            access_log.info("%s %s %s %d %.3fs", rid, scope.get("method", ""), path, status[0],
                            time.perf_counter() - started)

    def _check_auth(self, path: str, headers: dict[str, str],
                    method: str = "GET") -> APIError | None:
        if not self.keys or (self.exempt and path in EXEMPT_PATHS):
            return None
        if method == "OPTIONS":  # a CORS preflight carries no key (as vLLM's check)
            return None
        if self.open_page and playground.is_playground_path(path):
            return None
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
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
