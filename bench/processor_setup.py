"""The engine side of ``make bench`` (bench/bench_processor.py, whose docstring says what is
measured and how): the benchmark model, the workload, the engines and the timed runs."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
for _path in (ROOT, ROOT / "bench"):  # server/, training/ and bench/timed_processor.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from bench.machine import prepare_env  # noqa: E402 (needs ROOT on the path)

prepare_env(CACHE)
TIMING_ENV = "BENCH_PROC_TIMING_DIR"  # timed_processor.ENV_VAR, read before vLLM starts

MODEL_DIR = CACHE / "bench-qwen2-3.7m"
MODEL_KNOBS: dict[str, int] = {"hidden_size": 256, "num_layers": 4, "num_heads": 4,
                               "num_kv_heads": 2, "intermediate_size": 896, "seed": 0}
WEIGHT_SCALE = 6.0
N_PROMPTS = 64
MAX_MODEL_LEN = 2048


# ----------------------------------------------------------------------------- model
def build_bench_model(out: Path = MODEL_DIR) -> tuple[Path, int]:
    """Build (or reuse) the benchmark checkpoint; returns its path and parameter count."""
    stamp = out / "bench_build.json"
    params = {**MODEL_KNOBS, "weight_scale": WEIGHT_SCALE, "version": 1}
    if stamp.exists():
        saved = json.loads(stamp.read_text())
        if saved.get("params") == params:
            return out, int(saved["n_params"])
    import torch

    from training.tiny import build_random_model, build_tokenizer

    tokenizer = build_tokenizer(out, chat_format="s1")
    model = build_random_model(out, tokenizer, **MODEL_KNOBS)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied embedding counted once
            if "norm" not in name:
                p.mul_(WEIGHT_SCALE)
    model.save_pretrained(str(out), safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    stamp.write_text(json.dumps({"params": params, "n_params": n_params}))
    return out, n_params


# -------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """Prompts (as ids, thinking block opened) and the s1 format's ids for this tokenizer."""

    prompts: list[list[int]]
    ft: Any  # server.budget.formats.FormatTokens
    wait_ids: tuple[int, ...]
    attempt_ids: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.attempt_ids = (self.ft.end_ids[0], *sorted(self.ft.stop_ids - {self.ft.end_ids[0]}))

    def spec(self, thinking_min: int | None, thinking_max: int | None) -> Any:
        return self.ft.spec(thinking_min=thinking_min, thinking_max=thinking_max,
                            continuation_ids=self.wait_ids, prompt_opens=True)


def make_workload(model_dir: Path) -> Workload:
    from transformers import AutoTokenizer

    from server.budget.formats import FORMATS, FormatTokens
    from server.engine.loader import stop_ids_for

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    # Every id vLLM stops on (generation_config's EOS list too), as the server does: vLLM's
    # min_tokens masks all of them, and so must the processor's hold.
    stop = stop_ids_for(tok, str(model_dir))
    ft = FormatTokens.build(FORMATS["s1"], tok, stop)
    prompts = []
    for i in range(N_PROMPTS):
        a, b = 7 * i + 3, 13 * i % 97
        question = f"What is {a} + {b}? Count the letters of raspberry {i % 5 + 1} times."
        text = tok.apply_chat_template([{"role": "user", "content": question}],
                                       tokenize=False, add_generation_prompt=True)
        text += FORMATS["s1"].start + "\n"  # the s1 evaluation opens the block itself
        assert ft.prompt_opens(text)
        prompts.append(tok.encode(text, add_special_tokens=False))
    wait_ids = tuple(tok.encode("Wait", add_special_tokens=False))
    return Workload(prompts, ft, wait_ids)


def make_llm(model_dir: Path, processor: bool) -> Any:
    from timed_processor import TimedBudgetLogitsProcessor
    from vllm import LLM

    return LLM(model=str(model_dir), enforce_eager=True, dtype="float32",
               max_model_len=MAX_MODEL_LEN, max_num_seqs=64, seed=0,
               logits_processors=[TimedBudgetLogitsProcessor] if processor else None)


def close_llm(llm: Any) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


@dataclass
class Sample:
    wall: float  # seconds
    proc: float  # seconds spent in the processor's update_state + apply (timed engine only)
    proc_cpu: float  # the same, as thread CPU seconds (time descheduled left out)
    steps: int  # engine steps the processor saw (apply calls)


def timed(fn: Callable[[], Any]) -> tuple[Sample, Any]:
    from timed_processor import read_timing

    directory = os.environ[TIMING_ENV]
    before = read_timing(directory)
    t0 = time.perf_counter()
    result = fn()
    t1 = time.perf_counter()
    after = read_timing(directory)
    proc_ns = (after["apply_ns"] + after["update_ns"]) - (before["apply_ns"] + before["update_ns"])
    cpu_ns = after["cpu_ns"] - before["cpu_ns"]
    return Sample(t1 - t0, proc_ns / 1e9, cpu_ns / 1e9, after["steps"] - before["steps"]), result


def warm_up(llm: Any, wl: Workload) -> None:
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    llm.generate([{"prompt_token_ids": p} for p in wl.prompts], sp, use_tqdm=False)
