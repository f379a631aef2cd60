"""The two routes s1 replaces on vLLM's server: the model card and ``/version``.

Both answer vLLM's shape plus fields its clients ignore (the thinking format and effort
budgets; the resolved engine configuration). Every generating surface (chat, completions,
Responses, Messages, batched chat), tokenization, ``/health`` and ``/metrics`` are vLLM's
own routes (the plugin, :mod:`server.api.plugin`, puts the budgeted ones behind the s1
dependency). The path of one request under ``s1-serve``: ``front.Front`` (request id,
body size, access log; 503 while loading) -> vLLM's middleware (auth, CORS) -> vLLM's
router -> ``request_layer.budget_dependency`` (fields, limits, budget,
admission) -> vLLM's serving class -> ``engine_hook`` (budget into
``SamplingParams``, answer room) -> the engine's ``logits_processor`` -> ``budget``
(the state machine) -> ``request_layer.track`` (accounting, deadline) -> vLLM's response,
with ``budget_objects`` adding each choice's ``budget`` object.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from server.api.errors import ERROR_RESPONSES, APIError
from server.api.protocol import ModelCard, ModelList
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


@router.get("/version", response_model=VersionInfo)
async def version(request: Request) -> VersionInfo:
    """vLLM's ``{"version"}``, our version and the resolved engine configuration."""
    return version_info(getattr(request.app.state, "engine_info", None))
