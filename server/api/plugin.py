"""The s1 layer as a vLLM endpoint plugin: budgets on stock ``vllm serve``.

With s1-serve installed, vLLM's own server gains per-request thinking budgets::

    VLLM_PLUGINS=s1 vllm serve MODEL \\
        --logits-processors server.engine.logits_processor:BudgetLogitsProcessor \\
        --reasoning-parser s1

(``server.engine.logits_processor_v2:BudgetLogitsProcessorV2`` on Model Runner V2, which
vLLM 0.32 runs on GPUs by default; the s1 settings come from ``S1_*`` variables.)
``VLLM_PLUGINS`` must name ``s1``: vLLM loads endpoint plugins only when allowlisted.

vLLM calls :meth:`S1EndpointPlugin.attach_router` while it builds its app, after its
own routers: the plugin re-registers vLLM's generating routes (chat, completions,
Responses, Messages, batched chat, tokenization) with the s1 dependency and the
``budget`` objects (vLLM replaces a route of the same path and method), answers
:class:`~server.api.errors.APIError` and releases admission tickets. Then
:meth:`S1EndpointPlugin.init_state`, once the engine runs, builds the s1 state (model,
settings, admission counters) and the engine-call hook. ``s1-serve`` builds its app from
the same two functions (:func:`attach` and :func:`attach_state`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from server.api import request_layer
from server.api.budget_objects import budgeted_router
from server.api.errors import APIError

logger = logging.getLogger(__name__)

NAME = "s1"
# Statuses the budgeted routes answer beyond what vLLM's route declarations document.
DOCUMENTED = {status: {"description": text} for status, text in (
    (400, "Invalid request"), (401, "Missing or invalid API key"), (404, "Not found"),
    (413, "Body too large"), (429, "Over the in-flight limit"),
    (503, "Loading, or the engine is gone"), (504, "Past the request deadline"))}


def vllm_routers() -> list[APIRouter]:
    """vLLM's routers of the surfaces s1 budgets, and tokenization (same dependency:
    field policy and limits), as the ``budget`` objects need them."""
    from vllm.entrypoints.anthropic.api_router import router as messages
    from vllm.entrypoints.openai.chat_completion.api_router import router as chat
    from vllm.entrypoints.openai.completion.api_router import router as completions
    from vllm.entrypoints.openai.responses.api_router import router as responses
    from vllm.entrypoints.serve.tokenize.api_router import router as tokenize

    return [budgeted_router(chat), budgeted_router(completions), budgeted_router(responses),
            budgeted_router(messages), tokenize]


def attach(app: FastAPI, routers: list[APIRouter], *, only_existing: bool) -> None:
    """Mount ``routers`` behind the s1 dependency, answer APIError, release tickets.

    ``only_existing``: mount only paths the app already serves (on vLLM's app, the
    surfaces its arguments enabled), so the plugin adds no surface of its own."""
    existing = {getattr(r, "path", None) for r in app.routes}
    deps = [Depends(request_layer.budget_dependency)]
    for router in routers:
        if only_existing:
            kept = APIRouter()
            kept.routes.extend(r for r in router.routes if getattr(r, "path", None) in existing)
            router = kept
        app.include_router(router, dependencies=deps, responses=DOCUMENTED)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response(getattr(request.state, "request_id", None))

    # vLLM answers FastAPI's HTTPException in its error shape, but Starlette's own (an
    # unparsable body, an unknown path, a wrong method) falls through as {"detail": ...},
    # which its documented error schema does not allow: answer it with vLLM's handler.
    from starlette.exceptions import HTTPException
    from vllm.entrypoints.serve.exception_handling.handlers.http import (
        http_exception_handler,
    )

    app.add_exception_handler(HTTPException, http_exception_handler)
    app.add_middleware(request_layer.ReleaseTickets)


async def attach_state(state: Any, engine: Any, settings: Any) -> Any:
    """The s1 state for vLLM's server: the model as s1 reads it, the admission counters,
    the engine-call hook and the resolved engine configuration (``/version``)."""
    import asyncio

    from server.api import engine_hook
    from server.api.serving import Serving
    from server.engine import info
    from server.engine.loader import describe_model

    model = await asyncio.to_thread(describe_model, settings, engine)
    serving = Serving(engine, model, settings)
    engine_hook.install_hook(engine, serving)
    state.engine_info = info.collect_and_log(engine.vllm_config)
    return serving


# The s1 settings ``s1-serve`` parsed (its flags and S1_* variables); on stock
# ``vllm serve`` there are none and the plugin reads S1_* variables itself.
_SETTINGS: Any = None


def use_settings(settings: Any) -> None:
    """``s1-serve`` hands the plugin the s1 settings of its command line."""
    global _SETTINGS
    _SETTINGS = settings


def settings_for_app(args: argparse.Namespace) -> Any:
    if _SETTINGS is not None:
        return _SETTINGS
    from server.api.cli import settings_for

    return settings_for(args)


class S1EndpointPlugin:
    """vLLM's ``EndpointPlugin`` (entry point ``s1`` of ``vllm.endpoint_plugins``)."""

    name = NAME
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        from server.api.routes import router as s1_routes

        attach(app, vllm_routers(), only_existing=True)
        # The model card with the thinking format and /version with the engine block:
        # vLLM's two routes plus fields its clients ignore.
        app.include_router(s1_routes)
        settings = settings_for_app(app.state.args)
        if settings.playground:
            from server import playground

            playground.mount(app, settings)

    async def init_state(self, engine_client: Any, state: Any, args: argparse.Namespace) -> None:
        settings = settings_for_app(args)
        check_engine(engine_client.vllm_config, getattr(args, "reasoning_parser", None))
        serving = await attach_state(state, engine_client, settings)
        state.serving = serving
        ft = serving.model.format_tokens
        if ft is not None:
            from server.engine import reasoning_parser

            reasoning_parser.export_format(ft.fmt.start, ft.fmt.end)
        logger.info("s1 budgets on vLLM's server: %s (thinking format %s)",
                    serving.model.name, ft.fmt.name if ft else "none")


def check_engine(vllm_config: Any, reasoning_parser: str | None) -> None:
    """Refuse to serve budgets that the engine would not enforce (no silent ignores):
    the budget processor of the runner vLLM chose must be among its logits processors."""
    from server.engine.runner_choice import V1_PROCESSOR, V2_PROCESSOR

    v2 = bool(vllm_config.use_v2_model_runner)
    wanted = V2_PROCESSOR if v2 else V1_PROCESSOR
    names = {p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}"
             for p in vllm_config.model_config.logits_processors or ()}
    if wanted not in names:
        raise RuntimeError(
            f"the s1 plugin needs the budget processor of Model Runner {'V2' if v2 else 'V1'}"
            f" (which vLLM runs here): add --logits-processors {wanted}")
    if reasoning_parser != NAME:
        logger.warning("--reasoning-parser is %r, not 's1': budgets are enforced, but "
                       "reasoning_tokens and the reasoning split follow that parser",
                       reasoning_parser)


def vllm_flags() -> list[str]:
    """The ``vllm serve`` arguments the plugin needs on this machine: the budget processor
    of the runner vLLM will pick, the s1 reasoning parser, and on CPU no chunked prefill
    (what s1-serve sets itself; see server/engine/loader.py)."""
    import os

    from server.engine import loader, reasoning_parser
    from server.engine.runner_choice import ENV, choose_runner

    runner = choose_runner(os.environ.get(ENV), vllm_default_v2=loader.vllm_default_v2(),
                           speculative=False)
    flags = ["--logits-processors", runner.processor,
             "--reasoning-parser-plugin", reasoning_parser.__file__,
             "--reasoning-parser", reasoning_parser.NAME]
    if loader.on_cpu():
        flags.append("--no-enable-chunked-prefill")
    return flags


if __name__ == "__main__":
    # VLLM_PLUGINS=s1 vllm serve MODEL $(python -m server.api.plugin)
    import shlex

    print(" ".join(shlex.quote(f) for f in vllm_flags()))
