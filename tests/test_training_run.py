"""The SFT recipe end to end on CPU: `s1-train` on a tiny local model and synthetic data.

One run (16 steps, checkpoints every 8) feeds every test here: the loss falls, resuming
from the step-8 checkpoint reproduces steps 9-16 and the final weights, the output is a
servable bf16 checkpoint whose template opens the thinking block, and the real server
(vLLM engine, subprocess) loads it with no extra flags and honours a thinking budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from datasets_build.synthetic import build_splits, write_jsonl
from training.__main__ import main

STEPS, SAVE_EVERY = 16, 8


def flags(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(base), "--data", str(data), "--output-dir", str(out),
            "--block-size", "1024", "--global-batch-size", "8", "--per-device-batch-size", "8",
            "--learning-rate", "3e-3", "--max-steps", str(STEPS), "--save-strategy", "steps",
            "--save-steps", str(SAVE_EVERY), "--save-total-limit", "3", "--logging-steps", "1",
            "--no-progress-bar", "--seed", "0", *extra]


def losses(out: Path) -> dict[int, float]:
    info = json.loads((out / "s1_train.json").read_text())
    return {h["step"]: h["loss"] for h in info["log_history"] if "loss" in h}


@pytest.fixture(scope="module")
def run(tiny_s1, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    torch.set_num_threads(2)
    write_jsonl(build_splits(64, 8, 0)[0], root / "data" / "train.jsonl")
    assert main(flags(tiny_s1, root / "data", root / "run1")) == 0
    return tiny_s1, root


def test_loss_falls(run):
    _, root = run
    curve = losses(root / "run1")
    assert sorted(curve) == list(range(1, STEPS + 1))
    first, last = curve[1], sum(curve[s] for s in range(STEPS - 3, STEPS + 1)) / 4
    assert first > 5.5  # a random model over a 512-token vocabulary: about ln(512)
    assert last < first - 2.0, curve


def test_resume_reproduces_the_run(run):
    from safetensors.torch import load_file

    base, root = run
    run2 = root / "run2"
    run2.mkdir()
    shutil.copytree(root / "run1" / f"checkpoint-{SAVE_EVERY}", run2 / f"checkpoint-{SAVE_EVERY}")
    assert main(flags(base, root / "data", run2, "--resume-from-checkpoint", "latest")) == 0
    info = json.loads((run2 / "s1_train.json").read_text())
    assert info["resumed_from"].endswith(f"checkpoint-{SAVE_EVERY}")
    assert info["global_step"] == STEPS
    assert {p.name for p in run2.glob("checkpoint-*")} == {
        f"checkpoint-{SAVE_EVERY}", f"checkpoint-{STEPS}"}  # it went on from step 8
    first, second = losses(root / "run1"), losses(run2)
    assert sorted(second) == sorted(first)  # history 1-8 restored from the checkpoint
    for step in range(SAVE_EVERY + 1, STEPS + 1):
        assert second[step] == pytest.approx(first[step], rel=1e-3, abs=1e-3), step
    a, b = load_file(root / "run1" / "model.safetensors"), load_file(run2 / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=0.02, atol=0.02)


def test_output_is_a_servable_s1_checkpoint(run):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.formats import detect_format

    _, root = run
    out = root / "run1"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "How many r in rr?"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<|im_start|>think\n")
    assert detect_format(tok).name == "s1"
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert "<|im_start|>think" in cfg["chat_template"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2"
    info = json.loads((out / "s1_train.json").read_text())
    assert info["global_step"] == STEPS and info["data"]["overlong"] == 0


@pytest.mark.engine
def test_trained_checkpoint_is_served_with_budgets(run):
    from tests.server_proc import ServerProcess

    _, root = run
    server = ServerProcess(root / "run1")
    try:
        server.wait_ready()
        body = {"temperature": 0, "max_tokens": 48, "thinking_max": 8,
                "messages": [{"role": "user", "content": "How many r in raspberry?"}]}
        r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] <= 8
        assert reply["choices"][0]["message"]["role"] == "assistant"
    finally:
        assert server.stop() == 0
