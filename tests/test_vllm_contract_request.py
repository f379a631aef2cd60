"""The vLLM contract, request side (see test_vllm_contract for what the contract modules
are): prompt components, the output kinds and sampling parameter fields the budget layer
reads and sets, the deadline continuation's shapes, the logits processor interface, and
the reasoning parser's overridden methods, registration and delta fields."""

from __future__ import annotations

import dataclasses
import inspect
from typing import get_args

import pytest

from tests.vllm_introspect import param_names


# ----------------------------------------------------------- request path
def test_prompt_components() -> None:
    """server/api/engine_hook.py apply_budget: extract_prompt_components(model_config, prompt)
    .token_ids."""
    from vllm.renderers.inputs.preprocess import PromptComponents, extract_prompt_components

    assert param_names(extract_prompt_components) == ["model_config", "prompt"], (
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

    assert param_names(tokens_input)[:1] == ["prompt_token_ids"] and "cache_salt" in param_names(
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
    assert "reasoning_ended" in param_names(AsyncLLM.generate), (
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
        assert param_names(getattr(BudgetLogitsProcessor, name)) == param_names(base), (
            f"server/engine/logits_processor.py {name}{param_names(getattr(BudgetLogitsProcessor, name))}"
            f" vs vLLM's {param_names(base)}")
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

    assert "logits_processors" in param_names(AsyncEngineArgs)
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
    assert param_names(getattr(S1ReasoningParser, name)) == param_names(base), (
        f"server/engine/reasoning_parser.py {name}{param_names(getattr(S1ReasoningParser, name))} vs vLLM's "
        f"{param_names(base)}")


def test_reasoning_parser_registration() -> None:
    """server/engine/reasoning_parser.py registers itself as ``s1`` with register_module and reads the
    tokenizer from ``model_tokenizer``; server/engine/loader.py loads it with
    reasoning_parser_plugin."""
    from vllm.reasoning import ReasoningParser, ReasoningParserManager

    from server.engine import reasoning_parser as s1_parser

    assert param_names(ReasoningParserManager.register_module)[0] == "name", (
        "server/engine/reasoning_parser.py uses @ReasoningParserManager.register_module(NAME)")
    assert ReasoningParserManager.get_reasoning_parser(s1_parser.NAME) is (
        s1_parser.S1ReasoningParser), "server/engine/reasoning_parser.py registers 's1'"
    assert callable(getattr(ReasoningParserManager, "import_reasoning_parser", None)), (
        "server/engine/loader.py: --reasoning-parser-plugin is loaded with import_reasoning_parser")
    assert "self.model_tokenizer = tokenizer" in inspect.getsource(ReasoningParser.__init__), (
        "server/engine/reasoning_parser.py reads self.model_tokenizer")
    assert param_names(ReasoningParser.__init__)[0] == "tokenizer", (
        "server/engine/reasoning_parser.py __init__(tokenizer, *args, **kwargs)")


def test_delta_message_fields() -> None:
    from vllm.entrypoints.generate.base.protocol import DeltaMessage

    msg = DeltaMessage(reasoning="r", content="c")
    assert (msg.reasoning, msg.content) == ("r", "c"), (
        "server/engine/reasoning_parser.py returns DeltaMessage(reasoning=..., content=...)")

