"""Which model runner s1-serve follows and which budget processor it registers.

Expected choices are written out from vLLM 0.32's rules (``VllmConfig.use_v2_model_runner``)
and the issue: V2 wherever vLLM picks it, V1 as the fallback, speculative decoding
refused on V1 with a message that says what to change."""

from __future__ import annotations

import os

import pytest

from server.engine.runner_choice import (
    V1_PROCESSOR,
    V2_PROCESSOR,
    RunnerError,
    choose_runner,
    parse_env,
)


@pytest.mark.parametrize("env,default_v2,speculative,runner", [
    (None, True, False, "v2"),   # a GPU with Triton: vLLM's default
    (None, True, True, "v2"),    # ... with speculative decoding
    ("", True, False, "v2"),
    (None, False, False, "v1"),  # CPU, no Triton, or a feature V2 lacks
    ("0", True, False, "v1"),    # the user pinned V1
    ("1", False, False, "v2"),   # the user pinned V2
    ("true", False, True, "v2"),
])
def test_the_runner_follows_vllm(env: str | None, default_v2: bool, speculative: bool,
                                 runner: str) -> None:
    choice = choose_runner(env, vllm_default_v2=default_v2, speculative=speculative)
    assert choice.runner == runner
    assert choice.processor == {"v1": V1_PROCESSOR, "v2": V2_PROCESSOR}[runner]
    assert choice.describe() == {"model_runner": runner, "budget_processor": choice.processor}


def test_features_that_force_v2_win_over_the_variable() -> None:
    choice = choose_runner("0", vllm_default_v2=False, speculative=True,
                           v2_forced_by="watermarking")
    assert (choice.runner, choice.processor) == ("v2", V2_PROCESSOR)


def test_speculative_decoding_on_v1_is_refused_with_what_to_change() -> None:
    with pytest.raises(RunnerError, match="unset VLLM_USE_V2_MODEL_RUNNER=0"):
        choose_runner("0", vllm_default_v2=True, speculative=True)
    with pytest.raises(RunnerError, match="Model Runner V2"):
        choose_runner(None, vllm_default_v2=False, speculative=True)


def test_the_variable_is_read_as_vllm_reads_it() -> None:
    assert [parse_env(v) for v in (None, " ", "1", "TRUE", "0", "false")] == [
        None, None, True, True, False, False]
    with pytest.raises(RunnerError):
        parse_env("yes")


@pytest.mark.parametrize("processor,name", [(V1_PROCESSOR, "BudgetLogitsProcessor"),
                                            (V2_PROCESSOR, "BudgetLogitsProcessorV2")])
def test_the_named_processors_load_with_the_right_interface(processor: str, name: str) -> None:
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1Interface
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2Interface

    runner = "v1" if processor == V1_PROCESSOR else "v2"
    cls = choose_runner("1" if runner == "v2" else "0", vllm_default_v2=False,
                        speculative=False).processor_class()
    assert cls.__name__ == name
    assert issubclass(cls, V2Interface if runner == "v2" else V1Interface)


def test_the_engine_hook_pins_v1_and_stops_on_speculative_v1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from server.engine import loader as engine

    monkeypatch.setattr(engine, "RUNNER", None)  # restored after the test
    monkeypatch.setattr(engine, "vllm_default_v2", lambda: False)
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    assert engine.choose_model_runner(speculative=False).runner == "v1"
    assert engine.RUNNER is not None and engine.RUNNER.runner == "v1"
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"  # vLLM cannot pick V2 under it
    with pytest.raises(SystemExit, match="speculative decoding"):
        engine.choose_model_runner(speculative=True)
    monkeypatch.setattr(engine, "vllm_default_v2", lambda: True)
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER")
    assert engine.choose_model_runner(speculative=True).runner == "v2"
    assert "VLLM_USE_V2_MODEL_RUNNER" not in os.environ  # left to vLLM
