"""The vLLM contract, HTTP side (see test_vllm_contract for what the contract modules are):
the routers server/api/plugin.py re-mounts and server/api/request_layer.py budgets, the
app.state attributes vLLM's serving objects are read from, the SSE event names the budget
layer rewrites, vLLM's exceptions and error handlers, and the endpoint plugin interface."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any, get_args

import pytest

from tests.vllm_introspect import param_names, resolve

# ------------------------------------------------------------------ routers
ROUTES = [  # (router, method, path): what server/api/plugin.py re-mounts and server/api/request_layer.py budgets
    ("vllm.entrypoints.openai.chat_completion.api_router.router", "POST",
     "/v1/chat/completions"),
    ("vllm.entrypoints.openai.chat_completion.api_router.router", "POST",
     "/v1/chat/completions/batch"),
    ("vllm.entrypoints.openai.completion.api_router.router", "POST", "/v1/completions"),
    ("vllm.entrypoints.openai.responses.api_router.router", "POST", "/v1/responses"),
    ("vllm.entrypoints.anthropic.api_router.router", "POST", "/v1/messages"),
    ("vllm.entrypoints.serve.tokenize.api_router.router", "POST", "/tokenize"),
    ("vllm.entrypoints.serve.tokenize.api_router.router", "POST", "/detokenize"),
    ("vllm.entrypoints.serve.instrumentator.basic.router", "GET", "/load"),
]


@pytest.mark.parametrize(("router", "method", "path"), ROUTES,
                         ids=[f"{m} {p}" for _, m, p in ROUTES])
def test_route(router: str, method: str, path: str) -> None:
    from fastapi.routing import APIRoute

    routes = [r for r in resolve(router).routes if isinstance(r, APIRoute) and r.path == path]
    assert routes and any(method in r.methods for r in routes), (
        f"server/api/plugin.py re-mounts {router} for {method} {path} (server/api/request_layer.py _SURFACES, "
        f"server/api/budget_objects.py); the router has {[(r.path, r.methods) for r in routes]}")


def test_every_budgeted_path_is_a_vllm_route() -> None:
    """server/api/request_layer.py _SURFACES and server/api/budget_objects.py name vLLM's paths."""
    from server.api import budget_objects
    from server.api import request_layer as delegated

    mounted = {p for _, _, p in ROUTES}
    for path in set(delegated._SURFACES) | set(budget_objects._BUDGETED):  # noqa: SLF001
        assert path in mounted, f"server/api/request_layer.py / budget_objects.py budget {path}"
    for path, (module, name) in delegated._SURFACES.items():  # noqa: SLF001
        model = delegated._model(module, name)  # noqa: SLF001
        assert hasattr(model, "model_fields"), (
            f"server/api/field_policy.py reads {name}.model_fields for {path}")


def test_route_endpoints_can_be_wrapped() -> None:
    """server/api/budget_objects.py budgeted_router re-adds each generating route with the same
    endpoint wrapped (functools.wraps, so FastAPI reads vLLM's signature), the request body
    first and ``raw_request`` for the dependency."""
    from fastapi.routing import APIRoute

    from server.api.budget_objects import _BUDGETED

    for router, method, path in ROUTES:
        if path not in _BUDGETED:
            continue
        (route,) = [r for r in resolve(router).routes
                    if isinstance(r, APIRoute) and r.path == path and method in r.methods]
        assert inspect.iscoroutinefunction(route.endpoint), (
            f"server/api/budget_objects.py with_budget awaits vLLM's endpoint for {path}")
        assert "raw_request" in param_names(route.endpoint), (
            f"server/api/budget_objects.py keeps vLLM's endpoint signature for {path}")


def _state_reads(module: str) -> set[str]:
    src = inspect.getsource(importlib.import_module(module))
    return set(re.findall(r"request\.app\.state\.(\w+)", src))


def _state_writes(*functions: Any) -> set[str]:
    return {name for f in functions
            for name in re.findall(r"\bstate\.(\w+)\s*=", inspect.getsource(f))}


def test_app_state_attributes() -> None:
    """server/api/engine_hook.py init builds vLLM's serving objects on app.state with
    init_app_state(engine, state, args, ("generate",)); the mounted routers read them
    (app.state.openai_serving_chat, ...)."""
    from vllm.entrypoints.generate.api_router import init_generate_state
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    assert param_names(init_app_state)[:4] == ["engine_client", "state", "args", "supported_tasks"], (
        "server/api/front.py calls init_app_state(engine, state, args, tasks)")
    assert inspect.iscoroutinefunction(init_app_state), "server/api/front.py awaits it"
    assert "init_generate_state" in inspect.getsource(init_app_state), (
        "server/api/front.py relies on init_app_state building the generate state")
    written = _state_writes(init_app_state, init_generate_state)
    expected = {"openai_serving_chat", "openai_serving_chat_batch", "openai_serving_completion",
                "openai_serving_responses", "anthropic_serving_messages", "serving_tokenization",
                "server_load_metrics", "engine_client"}
    read = set()
    for router, _, _ in ROUTES:
        read |= _state_reads(router.rpartition(".")[0])
    assert expected <= read, (
        f"server/api/plugin.py re-mounts routers that should read {sorted(expected - read)} from "
        "app.state; vLLM renamed them")
    missing = read - written
    assert not missing, (
        f"server/api/front.py: the routers server/api/plugin.py re-mounts read app.state."
        f"{sorted(missing)}, which init_app_state/init_generate_state no longer set")


def test_generate_task_name() -> None:
    from vllm.tasks import GENERATION_TASKS

    assert "generate" in GENERATION_TASKS, (
        "server/api/engine_hook.py passes supported_tasks=('generate',)")


# ---------------------------------------------------------- SSE event names
def test_responses_completed_event() -> None:
    """server/api/budget_objects.py puts the top-level budget into the ``response`` of the
    ``response.completed`` (or ``response.incomplete``) event of /v1/responses."""
    from openai.types.responses import ResponseCompletedEvent, ResponseIncompleteEvent
    from vllm.entrypoints.openai.responses import api_router, serving

    from server.api.budget_objects import _TOP_LEVEL

    events, where = _TOP_LEVEL["/v1/responses"]
    assert events == {"response.completed", "response.incomplete"} and where == "response"
    assert get_args(ResponseCompletedEvent.model_fields["type"].annotation) == (
        "response.completed",)
    assert get_args(ResponseIncompleteEvent.model_fields["type"].annotation) == (
        "response.incomplete",)
    assert "response" in ResponseCompletedEvent.model_fields, "server/api/budget_objects.py"
    src = inspect.getsource(serving)
    assert 'type="response.completed"' in src and "response=final_response" in src, (
        "server/api/budget_objects.py edits vLLM's streamed response.completed event: vLLM's "
        "Responses serving no longer emits it as before")
    sse = inspect.getsource(api_router._convert_stream_to_sse_events)  # noqa: SLF001
    assert 'f"event: {event_type}\\ndata: "' in sse, (
        "server/api/budget_objects.py _edit parses 'event: X\\ndata: {...}\\n\\n' frames")


def test_messages_delta_event() -> None:
    """server/api/budget_objects.py puts the top-level budget into Anthropic's ``message_delta``
    event (the one with stop_reason and the final usage)."""
    from vllm.entrypoints.anthropic import serving
    from vllm.entrypoints.anthropic.protocol import AnthropicStreamEvent

    from server.api.budget_objects import _TOP_LEVEL

    assert _TOP_LEVEL["/v1/messages"] == ({"message_delta"}, None)
    assert "message_delta" in get_args(AnthropicStreamEvent.model_fields["type"].annotation), (
        "server/api/budget_objects.py edits Anthropic 'message_delta' events")
    assert serving.wrap_data_with_event("{}", "message_delta") == (
        "event: message_delta\ndata: {}\n\n"), "server/api/budget_objects.py _edit's frame shape"
    assert 'type="message_delta"' in inspect.getsource(serving), (
        "server/api/budget_objects.py: vLLM's Messages serving no longer emits message_delta")


# ----------------------------------------------------------------- errors
def test_exceptions() -> None:
    """vLLM's error handlers answer what server/api/request_layer.py budget_rejected / track raise."""
    from http import HTTPStatus

    from vllm.exceptions import (
        GracefulHTTPError,
        VLLMClientError,
        VLLMNotFoundError,
        VLLMValidationError,
    )

    assert issubclass(VLLMValidationError, VLLMClientError), (
        "server/api/request_layer.py budget_rejected relies on VLLMValidationError being a "
        "VLLMClientError (vLLM's handler answers those 400)")
    assert issubclass(VLLMNotFoundError, VLLMClientError), "vLLM's handler answers it 404"
    err = VLLMValidationError("too long", parameter="thinking_max")
    assert err.parameter == "thinking_max" and err.args[0] == "too long", (
        "server/api/request_layer.py builds VLLMValidationError(message, parameter=...); "
        "vLLM's handler reads exc.args[0] and exc.parameter")
    graceful = GracefulHTTPError("late", HTTPStatus.GATEWAY_TIMEOUT)
    assert graceful.message == "late" and int(graceful.http_status) == 504, (
        "server/api/request_layer.py raises GracefulHTTPError(message, status); vLLM's handler reads "
        ".message and .http_status")


def test_endpoint_plugin_interface() -> None:
    """server/api/plugin.py is a vLLM endpoint plugin: the entry-point group, the protocol's
    members and signatures, the order vLLM calls them in, and the engine config it reads."""
    import inspect

    from vllm import plugins
    from vllm.config import ModelConfig, VllmConfig
    from vllm.entrypoints.launchers import app as launcher_app
    from vllm.entrypoints.launchers.api_server import app_state
    from vllm.plugins.endpoint_plugins.interface import EndpointPlugin

    from server.api.plugin import S1EndpointPlugin

    assert plugins.ENDPOINT_PLUGINS_GROUP == "vllm.endpoint_plugins", "pyproject.toml"
    assert isinstance(S1EndpointPlugin(), EndpointPlugin), "server/api/plugin.py"
    assert param_names(EndpointPlugin.attach_router) == ["app"]
    assert param_names(EndpointPlugin.init_state) == ["engine_client", "state", "args"]
    assert "attach_endpoint_plugins" in inspect.getsource(launcher_app.build_app), (
        "vLLM's build_app attaches endpoint plugins (after its routers)")
    assert "init_endpoint_plugins_state" in inspect.getsource(app_state.init_app_state), (
        "vLLM's init_app_state initialises endpoint plugins (after its serving objects)")
    assert isinstance(inspect.getattr_static(VllmConfig, "use_v2_model_runner"), property), (
        "server/api/plugin.py check_engine reads vllm_config.use_v2_model_runner")
    assert "logits_processors" in ModelConfig.__dataclass_fields__, (
        "server/api/plugin.py check_engine reads model_config.logits_processors")

