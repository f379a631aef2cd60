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

from training.__main__ import main
from training.demo_data import build_splits, write_jsonl

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

    from server.budget.formats import detect_format

    _, root = run
    out = root / "run1"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "How many r in rr?"}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<|im_start|>think")  # as the harness's
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


# ------------------------------------------------- loss normalisation (issue 15, item 8)
def test_per_example_loss_by_hand():
    """Two examples: A has 1 loss token (loss ln 2), B has 3 (loss ln(1 + e^-2) each).

    Per example: (ln 2 + ln(1 + e^-2)) / 2; per token it would be (ln 2 + 3 ln(1 + e^-2)) / 4.
    """
    import math

    from training.loss import per_example_loss

    logits = torch.zeros(2, 4, 2)
    logits[1, :, 1] = 2.0  # B's targets are class 1 with logit 2: loss ln(1 + e^-2)
    labels = torch.tensor([[-100, -100, -100, 0], [-100, 1, 1, 1]])
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert per_example_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # the same two examples packed into one row, told apart by position_ids
    packed_logits = torch.cat([logits[0], logits[1]]).unsqueeze(0)
    packed_labels = torch.cat([labels[0], labels[1]]).unsqueeze(0)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])
    assert per_example_loss(packed_logits, packed_labels, positions).item() == pytest.approx(
        expected, rel=1e-6)


def test_per_example_trainer_loss_on_a_tiny_model(tiny_s1, tmp_path):
    """Two examples of very different lengths through the Trainer's compute_loss: the
    per-example loss is the mean of the two losses the model computes on each alone, and the
    per-token loss (the other option) is the model's own loss on the padded batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from training.data import collate
    from training.formatting import SFTDataset, encode
    from training.loss import per_example_trainer_class
    from training.sources import Triple

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_s1)
    model = AutoModelForCausalLM.from_pretrained(tiny_s1, dtype=torch.float32).eval()
    short = encode(tok, Triple("2+2?", "4", "4"))
    long = encode(tok, Triple("Count the words.", " ".join(["one two three"] * 40), "120"))
    assert len(long) - long.prompt_len > 8 * (len(short) - short.prompt_len)
    items = SFTDataset([short, long])
    batch = collate([items[0], items[1]], tok.pad_token_id or 0)
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([ex.input_ids.tolist()]),
                       labels=torch.tensor([ex.labels().tolist()])).loss.item()
                 for ex in (short, long)]
        per_token = model(**batch).loss.item()
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
        trainer = per_example_trainer_class()(model=model, args=args)
        per_example = trainer.compute_loss(model, dict(batch)).item()
    assert per_example == pytest.approx((alone[0] + alone[1]) / 2, rel=1e-5)
    assert abs(per_example - per_token) > 1e-3  # the two normalisations really differ here
