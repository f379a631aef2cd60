"""s1-serve's own routes: the model card, health, version and metrics.

Every generating surface (chat, completions, Responses, Messages, batched chat) and
tokenization is vLLM's own router and serving class (mounted in :mod:`server.api.app`,
budgeted by :mod:`server.api.request_layer` and :mod:`server.api.engine_hook`). The path of one
request: ``app.GateMiddleware`` (request id, auth, body size, releases the admission
ticket) -> vLLM's router -> ``request_layer.budget_dependency`` (fields, limits, budget,
admission) -> vLLM's serving class -> ``engine_hook`` (budget into
``SamplingParams``, answer room) -> the engine's ``logits_processor`` -> ``budget``
(the state machine) -> ``request_layer.track`` (accounting, deadline) -> vLLM's response,
with ``budget_objects`` adding each choice's ``budget`` object.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.api import metrics
from server.api.errors import ERROR_RESPONSES, APIError, engine_stopped
from server.api.protocol import Health, ModelCard, ModelList
from server.api.serving import Serving
from server.engine.info import VersionInfo, version_info

router = APIRouter()


def get_serving(request: Request) -> Serving:
    state = request.app.state
    serving = getattr(state, "serving", None)
    if serving is None:
        raise APIError(503, "the model is still loading; retry shortly "
                       "(GET /health says when it is ready)",
                       headers={"Retry-After": "5"})
    dead = getattr(state, "engine_dead", None)  # s1-serve's; vLLM's server has its own
    if dead is not None and dead():
        raise engine_stopped()
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


# -------------------------------------------------------------------- others
@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(serving: ServingDep) -> ModelList:
    m = serving.model
    from vllm.entrypoints.serve.engine.protocol import ModelPermission

    return ModelList(data=[ModelCard(id=m.name, root=serving.settings.model,
                                     permission=[ModelPermission().model_dump()],
                                     max_model_len=m.max_model_len,
                                     thinking_format=m.format_tokens.fmt.name
                                     if m.format_tokens else None,
                                     reasoning_effort_budgets=serving.settings.
                                     reasoning_effort_budgets if m.format_tokens else None)])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    if state.engine_dead():
        return JSONResponse(Health(status="dead", detail=state.load_error).model_dump(),
                            status_code=503)
    if getattr(state, "serving", None) is None:
        return JSONResponse(Health(status="loading").model_dump(), status_code=503)
    return JSONResponse(Health(status="ok").model_dump())


@router.get("/version", response_model=VersionInfo)
async def version(request: Request) -> VersionInfo:
    """vLLM's ``{"version"}``, our version and the resolved engine configuration."""
    return version_info(getattr(request.app.state, "engine_info", None))


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
