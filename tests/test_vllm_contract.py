"""The vLLM internals the s1 layer touches, checked against the installed vLLM (no engine).

s1-serve is pinned to one vLLM release (server/api/cli.py ``TESTED_VLLM``), and refuses
another unless ``--allow-untested-vllm``. This file is what makes an upgrade loud: every
import, attribute, signature, route, state attribute, enum member and event name that a
module of ``server/`` relies on is asserted here with the module that relies on it in the
message, so a failing assertion says what to port. It runs in seconds: nothing is started,
no model is loaded.

When a new reliance on vLLM is added under ``server/``, add its check here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from typing import Any, get_args

import pytest

SERVER = Path(__file__).resolve().parents[1] / "server"


def _params(func: Any) -> list[str]:
    """Parameter names of ``func``, without ``self``/``cls``."""
    return [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]


def _kinds(func: Any) -> dict[str, inspect._ParameterKind]:
    return {n: p.kind for n, p in inspect.signature(func).parameters.items()}


def _obj(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------- imports
# Every `from vllm... import X` / `vllm.X` under server/, with the module that uses it.
IMPORTS = [
    ("vllm.entrypoints.launchers.cli_args.make_arg_parser", "server/api/cli.py"),
    ("vllm.entrypoints.launchers.cli_args.validate_parsed_serve_args", "server/api/cli.py"),
    ("vllm.utils.argparse_utils.FlexibleArgumentParser", "server/api/cli.py"),
    ("vllm.__version__", "server/api/cli.py, server/engine/info.py"),
    ("vllm.entrypoints.generate.base.protocol.DeltaMessage", "server/engine/reasoning_parser.py"),
    ("vllm.reasoning.ReasoningParser", "server/engine/reasoning_parser.py"),
    ("vllm.reasoning.ReasoningParserManager", "server/engine/reasoning_parser.py"),
    ("vllm.platforms.current_platform", "server/engine/loader.py, server/engine/info.py, "
     "server/engine/preflight.py"),
    ("vllm.engine.arg_utils.AsyncEngineArgs", "server/engine/loader.py"),
    ("vllm.usage.usage_lib.UsageContext", "server/engine/loader.py"),
    ("vllm.v1.engine.async_llm.AsyncLLM", "server/engine/loader.py"),
    ("vllm.exceptions.VLLMValidationError", "server/api/request_layer.py"),
    ("vllm.exceptions.GracefulHTTPError", "server/api/request_layer.py"),
    ("vllm.entrypoints.launchers.api_server.app_state.init_app_state", "server/api/front.py"),
    ("vllm.entrypoints.launchers.app.build_app", "server/api/front.py (vLLM's app)"),
    ("vllm.entrypoints.serve.exception_handling.handlers.http.http_exception_handler",
     "server/api/plugin.py (Starlette's own HTTP errors in vLLM's shape)"),
    ("vllm.entrypoints.launchers.launcher.setup_server", "server/__main__.py (the socket)"),
    ("vllm.renderers.inputs.preprocess.extract_prompt_components", "server/api/engine_hook.py"),
    ("vllm.sampling_params.RequestOutputKind", "server/api/engine_hook.py, "
     "server/api/deadline.py, server/api/cut_stream.py, server/api/early_stop.py"),
    ("vllm.sampling_params.SamplingParams", "server/api/early_stop.py (an answer probe)"),
    ("vllm.inputs.engine.tokens_input", "server/api/cut_stream.py (the continuation's "
     "prompt), server/api/early_stop.py (a probe's)"),
    ("vllm.outputs.CompletionOutput", "server/api/cut_stream.py (the forced cut's own output)"),
    ("vllm.outputs.RequestOutput", "server/api/cut_stream.py (the forced cut's own output)"),
    ("vllm.SamplingParams", "server/engine/logits_processor.py"),
    ("vllm.v1.sample.logits_processor.BatchUpdate", "server/engine/logits_processor.py"),
    ("vllm.v1.sample.logits_processor.LogitsProcessor", "server/engine/logits_processor.py"),
    ("vllm.v1.sample.logits_processor.MoveDirectionality", "server/engine/logits_processor.py"),
    ("vllm.config.VllmConfig", "server/engine/logits_processor.py"),
    ("vllm.entrypoints.anthropic.api_router.router", "server/api/plugin.py"),
    ("vllm.entrypoints.openai.chat_completion.api_router.router", "server/api/plugin.py"),
    ("vllm.entrypoints.openai.completion.api_router.router", "server/api/plugin.py"),
    ("vllm.entrypoints.openai.responses.api_router.router", "server/api/plugin.py"),
    ("vllm.entrypoints.serve.tokenize.api_router.router", "server/api/plugin.py"),
    ("vllm.entrypoints.serve.engine.protocol.ModelPermission", "server/api/routes.py"),
    ("vllm.entrypoints.anthropic.protocol.AnthropicMessagesRequest",
     "server/api/field_policy.py, server/api/request_layer.py"),
    ("vllm.entrypoints.openai.chat_completion.protocol.ChatCompletionRequest",
     "server/api/field_policy.py, server/api/request_layer.py"),
    ("vllm.entrypoints.openai.chat_completion.protocol.BatchChatCompletionRequest",
     "server/api/request_layer.py"),
    ("vllm.entrypoints.openai.completion.protocol.CompletionRequest",
     "server/api/field_policy.py, server/api/request_layer.py"),
    ("vllm.entrypoints.openai.responses.protocol.ResponsesRequest",
     "server/api/field_policy.py, server/api/request_layer.py"),
    ("vllm.triton_utils.HAS_TRITON", "server/engine/loader.py (the runner choice)"),
    ("vllm.tokenizers.cached_tokenizer_from_config", "server/engine/logits_processor.py"),
    ("vllm.v1.worker.gpu.sample.logits_processor.LogitsContext",
     "server/engine/logits_processor_v2.py"),
    ("vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor",
     "server/engine/logits_processor_v2.py"),
    ("vllm.v1.worker.gpu.sample.logits_processor.LogitsProcRequestState",
     "server/engine/logits_processor_v2.py"),
]


@pytest.mark.parametrize(("path", "user"), IMPORTS, ids=[p for p, _ in IMPORTS])
def test_import(path: str, user: str) -> None:
    try:
        _obj(path)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{user} imports {path}, which this vLLM lacks: {exc}")


def test_the_list_covers_every_vllm_import_under_server() -> None:
    """A new ``from vllm.x import y`` under server/ must be added to IMPORTS (and checked)."""
    import ast

    listed = {p for p, _ in IMPORTS}
    missing = []
    for source in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
                for alias in node.names:
                    if f"{node.module}.{alias.name}" not in listed:
                        missing.append(f"{source.relative_to(SERVER.parent)}: "
                                       f"{node.module}.{alias.name}")
    assert not missing, f"vLLM imports not in tests/test_vllm_contract.py IMPORTS: {missing}"


def test_pinned_version_is_the_installed_one() -> None:
    import vllm

    from server.api.cli import TESTED_VLLM

    assert vllm.__version__.split("+")[0] == TESTED_VLLM, (
        f"server/api/cli.py TESTED_VLLM={TESTED_VLLM} but vLLM {vllm.__version__} is installed: "
        "after checking this file passes, move the pin")


# --------------------------------------------------------------- command line
def test_serve_parser_shape() -> None:
    """server/api/cli.py builds vLLM's serve parser, reads its actions and converts S1_<DEST>."""
    import argparse

    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from server.api.cli import VLLM_OWNED

    assert _params(make_arg_parser) == ["parser"], "server/api/cli.py calls make_arg_parser(parser)"
    assert _params(validate_parsed_serve_args) == ["args"], (
        "server/api/cli.py calls validate_parsed_serve_args(args)")
    parser = make_arg_parser(FlexibleArgumentParser())
    assert issubclass(FlexibleArgumentParser, argparse.ArgumentParser), "server/api/cli.py"
    actions = {a.dest: a for a in parser._actions}  # noqa: SLF001 (as server/api/cli.py)
    assert "model_tag" in actions and actions["model_tag"].option_strings == [], (
        "server/api/cli.py: `s1-serve MODEL` relies on vLLM's positional model_tag")
    assert "config" in actions, "server/api/cli.py: --config serve.yaml"
    # The vLLM arguments Settings mirrors (server/settings.py reads them there).
    frontend = {"host", "port", "served_model_name", "chat_template", "tool_call_parser",
                "enable_auto_tool_choice"}
    for dest in set(VLLM_OWNED) - {"log_level"} | frontend:
        assert dest in actions, f"server/api/cli.py VLLM_OWNED: vLLM has no argument {dest!r}"
    # Read by vLLM's build_app (middleware, CORS, keys) after server/api/cli.py merged them.
    for dest in ("middleware", "allow_credentials", "allowed_methods", "allowed_headers",
                 "allowed_origins", "api_key", "structured_outputs_config",
                 "reasoning_parser"):
        assert dest in actions, f"server/api/cli.py, server/engine/loader.py: vLLM has no argument {dest!r}"
    assert actions["api_key"].nargs in ("+", "*"), (
        "server/api/cli.py merges --api-key as a list (vLLM's nargs)")
    assert actions["served_model_name"].nargs in ("+", "*"), (
        "server/api/cli.py reads served_model_name[0] (vLLM's nargs)")
    # server/api/cli.py _convert: flags are store_true/store_false/BooleanOptionalAction.
    for dest in ("enable_prefix_caching", "trust_remote_code", "enforce_eager"):
        assert isinstance(actions[dest], (argparse._StoreTrueAction,  # noqa: SLF001
                                          argparse._StoreFalseAction,  # noqa: SLF001
                                          argparse.BooleanOptionalAction)), (
            f"server/api/cli.py _convert: S1_{dest.upper()}=true needs a flag action for {dest}")


def test_engine_args_shape() -> None:
    """server/engine/loader.py: AsyncEngineArgs.from_cli_args + the fields it sets and checks."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    assert _params(AsyncEngineArgs.from_cli_args) == ["args"], "server/engine/loader.py engine_args"
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for name in ("logits_processors", "reasoning_parser", "reasoning_parser_plugin",
                 "enable_chunked_prefill", "speculative_config", "structured_outputs_config",
                 "max_num_seqs", "max_num_batched_tokens"):
        assert name in fields, f"server/engine/loader.py sets or reads AsyncEngineArgs.{name}"
    so = {f.name for f in dataclasses.fields(StructuredOutputsConfig)}
    assert {"enable_in_reasoning", "reasoning_parser"} <= so, (
        "server/engine/loader.py refuse_unsupported reads enable_in_reasoning; server/api/engine_hook.py "
        "sets reasoning_parser on StructuredOutputsConfig")
    # tests/test_cli_corpus.py resolves the batch defaults with these two.
    assert _params(EngineArgs.get_batch_defaults) == ["world_size"]
    assert _params(EngineArgs._set_default_max_num_seqs_and_batched_tokens_args) == [  # noqa: SLF001
        "usage_context", "model_config", "parallel_config"]


def test_engine_start_shape() -> None:
    """server/engine/loader.py start_engine and server/api/front.py, server/api/serving.py,
    server/api/engine_hook.py read these of the started AsyncLLM."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    assert {"OPENAI_API_SERVER", "ENGINE_CONTEXT"} <= set(UsageContext.__members__), (
        "server/engine/loader.py starts the engine under UsageContext.OPENAI_API_SERVER")
    params = _params(AsyncLLM.from_vllm_config)
    assert {"vllm_config", "usage_context", "enable_log_requests", "aggregate_engine_logging",
            "disable_log_stats"} <= set(params), (
        "server/engine/loader.py start_engine calls AsyncLLM.from_vllm_config as vLLM's "
        "build_async_engine_client_from_engine_args does")
    init = inspect.getsource(AsyncLLM.__init__)
    for attr in ("vllm_config", "model_config"):
        assert f"self.{attr} =" in init, (
            f"server/api/front.py, server/engine/loader.py, server/api/serving.py, server/api/engine_hook.py read "
            f"AsyncLLM.{attr}")
    assert isinstance(inspect.getattr_static(AsyncLLM, "errored"), property), (
        "server/api/front.py engine_dead reads AsyncLLM.errored")
    assert callable(AsyncLLM.shutdown), "server/api/front.py shutdown calls engine.shutdown()"


def test_engine_generate_signature() -> None:
    """server/api/engine_hook.py install_hook replaces engine.generate with
    ``generate(prompt, sampling_params, request_id, *args, **kwargs)`` that returns vLLM's
    own stream (an async generator: server/api/request_layer.py track calls ``aclose``)."""
    from vllm.v1.engine.async_llm import AsyncLLM

    assert _params(AsyncLLM.generate)[:3] == ["prompt", "sampling_params", "request_id"], (
        "server/api/engine_hook.py install_hook wraps generate(prompt, sampling_params, "
        f"request_id, ...); vLLM's is {_params(AsyncLLM.generate)}")
    kinds = _kinds(AsyncLLM.generate)
    assert all(kinds[n] == inspect.Parameter.POSITIONAL_OR_KEYWORD
               for n in ("prompt", "sampling_params", "request_id")), (
        "server/api/engine_hook.py passes the first three positionally")
    assert inspect.isasyncgenfunction(AsyncLLM.generate), (
        "server/api/engine_hook.py returns the original stream without awaiting it, and "
        "server/api/request_layer.py track calls its aclose(): generate must be an async generator")


def test_engine_config_fields() -> None:
    """server/engine/info.py collect (GET /version) and server/engine/loader.py describe_model."""
    from vllm.config import CacheConfig, ModelConfig, ParallelConfig, SchedulerConfig, VllmConfig

    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    wanted = {
        VllmConfig: {"model_config", "cache_config", "scheduler_config", "parallel_config"},
        SchedulerConfig: {"async_scheduling", "enable_chunked_prefill", "max_num_seqs",
                          "max_num_batched_tokens"},
        CacheConfig: {"num_gpu_blocks", "block_size", "cache_dtype", "gpu_memory_utilization",
                      "enable_prefix_caching"},
        ParallelConfig: {"tensor_parallel_size", "data_parallel_size",
                         "pipeline_parallel_size"},
        ModelConfig: {"max_model_len", "dtype", "enforce_eager"},
    }
    for cls, fields in wanted.items():
        missing = fields - names(cls)
        assert not missing, f"server/engine/info.py reads {cls.__name__}.{sorted(missing)}"
    assert hasattr(VllmConfig, "use_v2_model_runner"), (
        "server/engine/info.py _runner reads VllmConfig.use_v2_model_runner")
    assert callable(getattr(ModelConfig, "get_vocab_size", None)), (
        "server/engine/loader.py describe_model calls model_config.get_vocab_size()")


def test_platform_interface() -> None:
    """server/engine/loader.py _on_cpu, server/engine/preflight.py, server/engine/info.py."""
    from vllm.platforms import current_platform

    for name in ("is_cpu", "is_cuda_alike", "get_device_name", "get_device_total_memory"):
        assert callable(getattr(current_platform, name, None)), (
            f"server/engine/loader.py, server/engine/preflight.py, server/engine/info.py call "
            f"current_platform.{name}()")
    for name in ("device_type", "device_name"):
        assert hasattr(current_platform, name), f"server/engine/info.py reads {name}"


def test_environment_variables() -> None:
    """server/engine/loader.py prepare_environment sets variables that vLLM must still read."""
    import vllm.envs as envs

    for var in ("VLLM_USE_V2_MODEL_RUNNER", "VLLM_CPU_KVCACHE_SPACE", "VLLM_API_KEY"):
        assert var in envs.environment_variables, (
            f"server/engine/loader.py (and server/api/cli.py for VLLM_API_KEY) relies on {var}")


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

    routes = [r for r in _obj(router).routes if isinstance(r, APIRoute) and r.path == path]
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
        (route,) = [r for r in _obj(router).routes
                    if isinstance(r, APIRoute) and r.path == path and method in r.methods]
        assert inspect.iscoroutinefunction(route.endpoint), (
            f"server/api/budget_objects.py with_budget awaits vLLM's endpoint for {path}")
        assert "raw_request" in _params(route.endpoint), (
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

    assert _params(init_app_state)[:4] == ["engine_client", "state", "args", "supported_tasks"], (
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
    assert _params(EndpointPlugin.attach_router) == ["app"]
    assert _params(EndpointPlugin.init_state) == ["engine_client", "state", "args"]
    assert "attach_endpoint_plugins" in inspect.getsource(launcher_app.build_app), (
        "vLLM's build_app attaches endpoint plugins (after its routers)")
    assert "init_endpoint_plugins_state" in inspect.getsource(app_state.init_app_state), (
        "vLLM's init_app_state initialises endpoint plugins (after its serving objects)")
    assert isinstance(inspect.getattr_static(VllmConfig, "use_v2_model_runner"), property), (
        "server/api/plugin.py check_engine reads vllm_config.use_v2_model_runner")
    assert "logits_processors" in ModelConfig.__dataclass_fields__, (
        "server/api/plugin.py check_engine reads model_config.logits_processors")


# ----------------------------------------------------------- request path
def test_prompt_components() -> None:
    """server/api/engine_hook.py apply_budget: extract_prompt_components(model_config, prompt)
    .token_ids."""
    from vllm.renderers.inputs.preprocess import PromptComponents, extract_prompt_components

    assert _params(extract_prompt_components) == ["model_config", "prompt"], (
        "server/api/engine_hook.py calls extract_prompt_components(model_config, prompt)")
    assert "token_ids" in PromptComponents._fields, "server/api/engine_hook.py reads .token_ids"


def test_request_output_kind() -> None:
    from vllm.sampling_params import RequestOutputKind

    assert {"DELTA", "FINAL_ONLY", "CUMULATIVE"} <= set(RequestOutputKind.__members__), (
        "server/api/engine_hook.py install_hook compares output_kind with DELTA and FINAL_ONLY")


def test_sampling_params_fields() -> None:
    """server/api/engine_hook.py reads and sets these on vLLM's SamplingParams (a copy per
    fanned-out choice); server/engine/logits_processor.py reads extra_args, seed, temperature."""
    import copy

    from vllm import SamplingParams

    params = SamplingParams(max_tokens=4)
    for name in ("seed", "n", "extra_args", "max_tokens", "output_kind", "structured_outputs",
                 "thinking_token_budget", "temperature"):
        assert hasattr(params, name), f"server/api/engine_hook.py uses SamplingParams.{name}"
    child = copy.copy(params)
    child.n = 1
    child.extra_args = {"s1_budget": {}}
    assert params.extra_args is None, "server/api/engine_hook.py copies SamplingParams per choice"


def test_deadline_continuation_shapes() -> None:
    """server/api/deadline.py: the continuation after a thinking deadline's cut is a token
    prompt built with tokens_input; the choice's outputs are vLLM's RequestOutput and
    CompletionOutput, read and rewritten field by field (splice, DELTA -> the serving
    class's kind); the forced ids' logprobs come from the continuation's prompt logprobs;
    ``reasoning_ended`` is one of generate's keyword arguments."""
    import copy

    from vllm import SamplingParams
    from vllm.inputs.engine import tokens_input
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.v1.engine.async_llm import AsyncLLM

    assert _params(tokens_input)[:1] == ["prompt_token_ids"] and "cache_salt" in _params(
        tokens_input), "server/api/deadline.py calls tokens_input(ids, cache_salt=...)"
    assert tokens_input([1, 2]) == {"type": "token", "prompt_token_ids": [1, 2]}, (
        "server/api/deadline.py refuses prompts whose type is not 'token' and reads "
        "prompt_token_ids")
    comp = CompletionOutput(index=0, text="a", token_ids=[1], cumulative_logprob=None,
                            logprobs=None, finish_reason=None)
    for name in ("index", "text", "token_ids", "cumulative_logprob", "logprobs",
                 "finish_reason"):
        assert hasattr(comp, name), f"server/api/deadline.py uses CompletionOutput.{name}"
    copy.copy(comp)
    out = RequestOutput("r", None, [1], None, [comp], False)
    for name in ("request_id", "prompt", "prompt_token_ids", "prompt_logprobs", "outputs",
                 "finished", "num_cached_tokens"):
        assert hasattr(out, name), f"server/api/deadline.py uses RequestOutput.{name}"
    params = SamplingParams(max_tokens=4)
    for name in ("logprobs", "prompt_logprobs", "min_tokens", "skip_special_tokens"):
        assert hasattr(params, name), f"server/api/deadline.py uses SamplingParams.{name}"
    assert "reasoning_ended" in _params(AsyncLLM.generate), (
        "server/api/deadline.py sets generate(..., reasoning_ended=True) for the continuation")


def test_probe_params() -> None:
    """server/api/early_stop.py: an answer probe is SamplingParams(n=1, temperature=0,
    max_tokens, output_kind=DELTA, skip_special_tokens=True), which vLLM samples greedily."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, SamplingType

    params = SamplingParams(n=1, temperature=0.0, max_tokens=16,
                            output_kind=RequestOutputKind.DELTA, skip_special_tokens=True)
    assert params.sampling_type == SamplingType.GREEDY and params.max_tokens == 16
    assert not params.skip_reading_prefix_cache, "a probe must read the prefix cache"


def test_model_permission() -> None:
    from vllm.entrypoints.serve.engine.protocol import ModelPermission

    assert isinstance(ModelPermission().model_dump(), dict), (
        "server/api/routes.py list_models builds ModelPermission().model_dump()")


# ------------------------------------------------------------ logits processor
def test_logits_processor_interface() -> None:
    """server/engine/logits_processor.py BudgetLogitsProcessor implements vLLM's V1 interface."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    from server.engine.logits_processor import BudgetLogitsProcessor

    assert issubclass(BudgetLogitsProcessor, LogitsProcessor)
    abstract = set(getattr(LogitsProcessor, "__abstractmethods__", ()))
    assert abstract <= set(vars(BudgetLogitsProcessor)), (
        f"server/engine/logits_processor.py must implement {sorted(abstract)}")
    for name in ("__init__", "apply", "is_argmax_invariant", "update_state",
                 "validate_params"):
        base = getattr(LogitsProcessor, name, None)
        assert base is not None, f"server/engine/logits_processor.py overrides {name}, gone in vLLM"
        assert _params(getattr(BudgetLogitsProcessor, name)) == _params(base), (
            f"server/engine/logits_processor.py {name}{_params(getattr(BudgetLogitsProcessor, name))}"
            f" vs vLLM's {_params(base)}")
    assert isinstance(inspect.getattr_static(LogitsProcessor, "validate_params"),
                      classmethod), "server/engine/logits_processor.py validate_params is a classmethod"
    names = {f.name for f in dataclasses.fields(BatchUpdate)}
    assert {"removed", "added", "moved"} <= names, (
        "server/engine/logits_processor.py update_state reads BatchUpdate.removed/added/moved")
    assert {"SWAP", "UNIDIRECTIONAL"} <= set(MoveDirectionality.__members__), (
        "server/engine/logits_processor.py update_state handles MoveDirectionality.SWAP")
    import vllm.v1.sample.logits_processor.interface as interface

    added = getattr(interface, "AddedRequest", None)
    assert added is not None and len(get_args(added)) == 4, (
        "server/engine/logits_processor.py unpacks added as (index, params, prompt, out)")
    moved = getattr(interface, "MovedRequest", None)
    assert moved is not None and len(get_args(moved)) == 3, (
        "server/engine/logits_processor.py unpacks moved as (a, b, direction)")


def test_custom_logits_processors_are_engine_args() -> None:
    """server/engine/loader.py passes the processor class in AsyncEngineArgs.logits_processors."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    from server.engine.logits_processor import BudgetLogitsProcessor
    from server.settings import DEMO_MODEL

    assert "logits_processors" in _params(AsyncEngineArgs)
    args = AsyncEngineArgs(model=str(DEMO_MODEL), logits_processors=[BudgetLogitsProcessor])
    assert args.logits_processors == [BudgetLogitsProcessor], "server/engine/loader.py engine_args"


# ----------------------------------------------------------- reasoning parser
OVERRIDDEN = ("is_reasoning_end", "is_reasoning_end_streaming", "extract_content_ids",
              "count_reasoning_tokens", "adjust_initial_state_from_prompt", "adjust_request",
              "extract_reasoning", "extract_reasoning_streaming")


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_reasoning_parser_method(name: str) -> None:
    """server/engine/reasoning_parser.py S1ReasoningParser overrides vLLM's ReasoningParser methods; vLLM
    calls them by these names and parameter names."""
    from vllm.reasoning import ReasoningParser

    from server.engine.reasoning_parser import S1ReasoningParser

    base = getattr(ReasoningParser, name, None)
    assert base is not None, (
        f"server/engine/reasoning_parser.py overrides ReasoningParser.{name}, which vLLM no longer calls")
    assert _params(getattr(S1ReasoningParser, name)) == _params(base), (
        f"server/engine/reasoning_parser.py {name}{_params(getattr(S1ReasoningParser, name))} vs vLLM's "
        f"{_params(base)}")


def test_reasoning_parser_registration() -> None:
    """server/engine/reasoning_parser.py registers itself as ``s1`` with register_module and reads the
    tokenizer from ``model_tokenizer``; server/engine/loader.py loads it with
    reasoning_parser_plugin."""
    from vllm.reasoning import ReasoningParser, ReasoningParserManager

    from server.engine import reasoning_parser as s1_parser

    assert _params(ReasoningParserManager.register_module)[0] == "name", (
        "server/engine/reasoning_parser.py uses @ReasoningParserManager.register_module(NAME)")
    assert ReasoningParserManager.get_reasoning_parser(s1_parser.NAME) is (
        s1_parser.S1ReasoningParser), "server/engine/reasoning_parser.py registers 's1'"
    assert callable(getattr(ReasoningParserManager, "import_reasoning_parser", None)), (
        "server/engine/loader.py: --reasoning-parser-plugin is loaded with import_reasoning_parser")
    assert "self.model_tokenizer = tokenizer" in inspect.getsource(ReasoningParser.__init__), (
        "server/engine/reasoning_parser.py reads self.model_tokenizer")
    assert _params(ReasoningParser.__init__)[0] == "tokenizer", (
        "server/engine/reasoning_parser.py __init__(tokenizer, *args, **kwargs)")


def test_delta_message_fields() -> None:
    from vllm.entrypoints.generate.base.protocol import DeltaMessage

    msg = DeltaMessage(reasoning="r", content="c")
    assert (msg.reasoning, msg.content) == ("r", "c"), (
        "server/engine/reasoning_parser.py returns DeltaMessage(reasoning=..., content=...)")

