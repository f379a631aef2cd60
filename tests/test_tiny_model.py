"""Tests for training/tiny.py: the locally built tokenizer, chat templates and random Qwen2.

These checkpoints stand in for real models everywhere in the suite, so their templates must
match the formats the server detects, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.tiny import QWEN_SYSTEM, build_tiny_checkpoint

MESSAGES = [{"role": "user", "content": "How many r in raspberry?"}]
CHATML_USER = "<|im_start|>user\nHow many r in raspberry?<|im_end|>\n"
S1_SYSTEM = f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
EXPECTED_PROMPTS = {
    "s1": S1_SYSTEM + CHATML_USER + "<|im_start|>assistant\n",
    "s1-open": S1_SYSTEM + CHATML_USER + "<|im_start|>assistant\n<|im_start|>think\n",
    "think": CHATML_USER + "<|im_start|>assistant\n<think>\n",
}


@pytest.fixture(scope="module", params=sorted(EXPECTED_PROMPTS))
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    fmt = request.param
    return fmt, build_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{fmt}"), chat_format=fmt)


def test_tokenizer_round_trips_text(checkpoint):
    _, path = checkpoint
    tok = AutoTokenizer.from_pretrained(path)
    text = "Wait, how many r in raspberry? Final Answer: 3\n  x=1+2 ünïcødé"
    assert tok.decode(tok(text).input_ids) == text


def test_chat_template_exact(checkpoint):
    fmt, path = checkpoint
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt == EXPECTED_PROMPTS[fmt]
    no_gen = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=False)
    assert EXPECTED_PROMPTS[fmt].startswith(no_gen) and no_gen.endswith("<|im_end|>\n")


def test_explicit_system_replaces_default(checkpoint):
    _, path = checkpoint
    tok = AutoTokenizer.from_pretrained(path)
    msgs = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n" + CHATML_USER


def test_special_tokens_are_single_ids(checkpoint):
    fmt, path = checkpoint
    tok = AutoTokenizer.from_pretrained(path)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if fmt == "think":
        specials += ["<think>", "</think>"]
    for s in specials:
        ids = tok(s, add_special_tokens=False).input_ids
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [s]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_model_loads_and_generates(checkpoint):
    _, path = checkpoint
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tok)
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    eos = model.generation_config.eos_token_id
    assert eos[0] == tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
        # Greedy by hand: one full forward pass per step, the argmax of the last position.
        by_hand = ids
        for _ in range(8):
            logits = model(by_hand).logits[0, -1]
            assert torch.isfinite(logits).all() and logits.std() > 0  # weights are not inert
            nxt = int(logits.argmax())
            by_hand = torch.cat([by_hand, torch.tensor([[nxt]])], dim=1)
            if nxt in eos:
                break
    assert out[0].tolist() == by_hand[0].tolist()


def test_build_is_idempotent_and_small(tmp_path):
    first = build_tiny_checkpoint(tmp_path / "c")
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_checkpoint(tmp_path / "c") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert (first / "model.safetensors").stat().st_size < 8 * 2**20
