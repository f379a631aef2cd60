"""The vLLM internals the s1 layer touches, checked against the installed vLLM (no engine):
imports, the pinned version, the command line and the engine.

s1-serve is pinned to one vLLM release (server/api/cli.py ``TESTED_VLLM``), and refuses
another unless ``--allow-untested-vllm``. These modules make an upgrade loud: every
import, attribute, signature, route, state attribute, enum member and event name that a
module of ``server/`` relies on is asserted with the module that relies on it in the
message, so a failing assertion says what to port. They run in seconds: nothing is
started, no model is loaded. The contract is split by side: this module (imports, version,
command line, engine), test_vllm_contract_http (routers, app state, SSE event names,
errors, the endpoint plugin) and test_vllm_contract_request (prompt and sampling
parameters, the logits processor, the reasoning parser).

When a new reliance on vLLM is added under ``server/``, add its check to the module for
its side (and a new import to IMPORTS here).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from tests.vllm_introspect import param_kinds, param_names, resolve

SERVER = Path(__file__).resolve().parents[1] / "server"

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
     "server/api/cut_stream.py, server/api/cut_continue.py, server/api/early_stop.py"),
    ("vllm.sampling_params.SamplingParams", "server/api/early_stop.py (an answer probe)"),
    ("vllm.inputs.engine.tokens_input", "server/api/cut_continue.py (the prompt of a "
     "continuation or a probe)"),
    ("vllm.outputs.CompletionOutput", "server/api/cut_continue.py (the forced cut's output)"),
    ("vllm.outputs.RequestOutput", "server/api/cut_continue.py (the forced cut's output)"),
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
        resolve(path)
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

    assert param_names(make_arg_parser) == ["parser"], "server/api/cli.py calls make_arg_parser(parser)"
    assert param_names(validate_parsed_serve_args) == ["args"], (
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

    assert param_names(AsyncEngineArgs.from_cli_args) == ["args"], "server/engine/loader.py engine_args"
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for name in ("logits_processors", "reasoning_parser", "reasoning_parser_plugin",
                 "enable_chunked_prefill", "speculative_config", "structured_outputs_config",
                 "max_num_seqs", "max_num_batched_tokens"):
        assert name in fields, f"server/engine/loader.py sets or reads AsyncEngineArgs.{name}"
    so = {f.name for f in dataclasses.fields(StructuredOutputsConfig)}
    assert {"enable_in_reasoning", "reasoning_parser"} <= so, (
        "server/engine/loader.py refuse_unsupported reads enable_in_reasoning; server/api/engine_hook.py "
        "sets reasoning_parser on StructuredOutputsConfig")
    # tests/test_cli_batch_defaults.py resolves the batch defaults with these two.
    assert param_names(EngineArgs.get_batch_defaults) == ["world_size"]
    assert param_names(EngineArgs._set_default_max_num_seqs_and_batched_tokens_args) == [  # noqa: SLF001
        "usage_context", "model_config", "parallel_config"]


def test_engine_start_shape() -> None:
    """server/engine/loader.py start_engine and server/api/front.py, server/api/serving.py,
    server/api/engine_hook.py read these of the started AsyncLLM."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    assert {"OPENAI_API_SERVER", "ENGINE_CONTEXT"} <= set(UsageContext.__members__), (
        "server/engine/loader.py starts the engine under UsageContext.OPENAI_API_SERVER")
    params = param_names(AsyncLLM.from_vllm_config)
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

    assert param_names(AsyncLLM.generate)[:3] == ["prompt", "sampling_params", "request_id"], (
        "server/api/engine_hook.py install_hook wraps generate(prompt, sampling_params, "
        f"request_id, ...); vLLM's is {param_names(AsyncLLM.generate)}")
    kinds = param_kinds(AsyncLLM.generate)
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

