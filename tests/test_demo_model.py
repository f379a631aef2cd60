"""Tests for the embedded demo model: its data, its trainer, and the committed checkpoint.

The checkpoint tests run the real vLLM engine with the server's budget-forcing processor
(one engine for the module) on held-out questions, greedy.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from training.data import IGNORE, encode_example
from training.demo_data import (
    FINAL,
    GLANCE,
    HEADER,
    WAIT,
    build_splits,
    count_steps,
    generate,
    split_words,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "server" / "demo_model"
N_EVAL = 60


def _check_count(segment: str, word: str, letter: str) -> None:
    steps = count_steps(word, letter)
    assert segment == HEADER.format(letter) + "".join(steps)
    assert [s[0] for s in steps] == list(word)
    assert [int(s[1:]) for s in steps] == [word[: i + 1].count(letter) for i in range(len(word))]
    assert int(steps[-1][1:]) == word.count(letter)


def test_traces_are_correct_except_flagged_slips():
    train, held_out = build_splits(3000, 300, seed=0)
    kinds = set()
    for ex in train + held_out:
        meta = json.loads(ex.metadata)
        word, letter, truth = meta["word"], meta["letter"], meta["count"]
        kinds.add(meta["trace"])
        assert truth == word.count(letter) and ex.solution == str(truth)
        assert ex.attempt == f"Answer: {truth}"
        segments = ex.thinking_trajectories[0].split("\n" + WAIT + "\n")
        assert WAIT not in "".join(segments)
        # Every segment after a Wait, and the last one, is a complete correct count.
        for seg in segments[1:]:
            _check_count(seg, word, letter)
        first = segments[0]
        if first == GLANCE.format(truth):
            continue
        if meta["trace"] == "slip-wait":
            # A correct prefix, then exactly one wrong running count, noticed at once.
            good = count_steps(word, letter)
            header = HEADER.format(letter)
            assert first.startswith(header)
            first = first[len(header):]
            k = len(first) // 2
            assert first[: 2 * (k - 1)] == "".join(good[: k - 1])
            assert first[-2] == word[k - 1] and first[-2:] != good[k - 1]
            assert len(segments) == 2
        else:
            _check_count(first, word, letter)
    assert kinds == {"careful", "glance", "glance-wait", "slip-wait", "check-wait"}


def test_cut_traces_end_in_the_best_partial_answer():
    """Cut rows: a prefix of a trace, then "Final Answer: N" with N what the latest line
    supports: the running count inside a count (first or recount), the glance inside a
    glance, else the last finished estimate."""
    train, held_out = build_splits(3000, 300, seed=0, cut_share=0.3)
    _, plain = build_splits(3000, 300, seed=0)
    assert [e.question for e in held_out] == [e.question for e in plain]  # eval unchanged
    cuts = [ex for ex in train if json.loads(ex.metadata)["trace"].startswith("cut-")]
    assert 0.25 < len(cuts) / len(train) < 0.35
    kinds = set()
    for ex in cuts:
        meta = json.loads(ex.metadata)
        word, letter, truth = meta["word"], meta["letter"], meta["count"]
        kinds.add(meta["trace"])
        thinking = ex.thinking_trajectories[0]
        assert ex.solution == str(truth)
        assert thinking and not thinking.endswith("\n")
        n = int(ex.attempt.removeprefix("Final Answer: "))
        assert ex.attempt == FINAL.format(n)
        header = HEADER.format(letter)
        careful = header + "".join(count_steps(word, letter))
        last = thinking.split("\n")[-1]
        if last.startswith(header) and len(last) > len(header):  # inside a count
            assert careful.startswith(last), thinking  # cut counts are correct prefixes
            written = last[len(header):][0::2]
            assert word.startswith(written) and n == written.count(letter), (thinking, n)
        elif "\n" in thinking or GLANCE.format("").startswith(last[:12]):
            assert n == truth, (thinking, ex.attempt)  # a glance or a finished line before
        else:
            assert careful.startswith(last) and n == 0, (thinking, n)  # inside the header
    assert kinds == {"cut-careful", "cut-glance", "cut-glance-wait", "cut-check-wait"}


def test_cut_rows_are_the_tokens_the_server_forces(tmp_path):
    """A cut row renders, after its thinking, exactly what the budget processor forces at
    thinking_max: a newline unless thinking ends with one, the end delimiter, "\nFinal
    Answer:"; then the trained answer. Mid-line, mid-step and line-end cuts."""
    from server.budget.formats import FORMATS, FormatTokens
    from server.budget.machine import FORCE, BudgetState
    from training.demo import demo_tokenizer

    tok = demo_tokenizer(tmp_path)
    stop = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
    ft = FormatTokens.build(FORMATS["s1"], tok, stop)
    q = "How many r in raspberry?"
    prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok.encode(prompt, add_special_tokens=False)
    cases = [  # (what the model thought before the cap, the training row's thinking)
        ("'r': r1a1s1p1b1e1", "'r': r1a1s1p1b1e1"),  # mid-line, after a count
        ("'r': r1a1s1p1b1e", "'r': r1a1s1p1b1e"),  # mid-step, before the count
        ("At a glance: 3", "At a glance: 3"),  # end of a line, before its newline
        ("At a glance: 3\n", "At a glance: 3"),  # right after the newline
        ("At a glance: 3\nWait, let", "At a glance: 3\nWait, let"),
    ]
    for model_thinking, row_thinking in cases:
        enc = encode_example(tok, q, row_thinking, FINAL.format(1))
        think_ids = tok.encode(model_thinking, add_special_tokens=False)
        spec = ft.spec(thinking_min=None, thinking_max=len(think_ids), continuation_ids=(),
                       prompt_opens=True, prompt_text=prompt)
        state = BudgetState(spec)
        state.observe_many(think_ids)
        forced = []
        while state.decide() == FORCE:
            forced.append(state.forced_token)
            state.observe(state.forced_token)
        nl = [] if model_thinking.endswith("\n") else [ft.newline_id]
        assert forced == nl + list(ft.end_ids) + list(ft.answer_prefix_ids)
        server = prompt_ids + think_ids + forced
        assert enc["input_ids"][: len(server)] == server, model_thinking
        assert tok.decode(enc["input_ids"][len(server):]) == " 1<|im_end|>"


def test_held_out_questions_are_unseen():
    train, held_out = build_splits(5000, 300, seed=0)
    train_words, eval_words = split_words(0)
    assert not set(train_words) & set(eval_words)
    assert not {e.question for e in train} & {e.question for e in held_out}


def test_loss_mask_covers_only_the_assistant_turn(tmp_path):
    from training.demo import demo_tokenizer

    tok = demo_tokenizer(tmp_path)
    enc = encode_example(tok, "How many r in raspberry?", "r1a1", "Answer: 1")
    trained = [i for i, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE]
    assert tok.decode(trained) == (
        "<|im_start|>think\nr1a1\n<|im_start|>answer\nAnswer: 1<|im_end|>")
    assert "raspberry" in tok.decode(enc["input_ids"])


def test_short_training_lowers_loss(tmp_path):
    from training.demo import DemoConfig, demo_tokenizer, encode_rows, train
    from training.tiny import build_random_model

    # No wall-clock guard: the schedule is the step schedule and all 40 steps run.
    cfg = DemoConfig(batch_size=8, lr=5e-3, warmup=5, max_minutes=float("inf"))
    tok = demo_tokenizer(tmp_path)
    model = build_random_model(tmp_path, tok, hidden_size=64, num_layers=2, num_heads=2,
                               num_kv_heads=1, intermediate_size=128)
    rows = generate(400, seed=1, words=split_words(0)[0])
    losses = train(model, [encode_rows(tok, rows)], cfg, max_steps=40, log_every=10,
                   pad_id=tok.pad_token_id)
    assert len(losses) == 40
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, (first, last)


@pytest.fixture(scope="module")
def evaluator():
    from training.demo_eval import DemoEvaluator

    ev = DemoEvaluator(DEMO, max_num_seqs=64)
    yield ev
    ev.close()


@pytest.fixture(scope="module")
def held_out():
    _, rows = build_splits(0, N_EVAL, seed=0)
    random.Random(1).shuffle(rows)
    return [r.question for r in rows], [json.loads(r.metadata)["count"] for r in rows]


def test_demo_checkpoint_is_small_and_auto_detects_s1():
    from transformers import AutoTokenizer

    from server.budget.formats import detect_format

    total = sum(p.stat().st_size for p in DEMO.iterdir() if p.is_file())
    assert total < 10 * 2**20
    fmt = detect_format(AutoTokenizer.from_pretrained(DEMO), str(DEMO))
    assert fmt is not None and fmt.name == "s1"


# Held-out words (never in training): readable examples for the natural-thinking check.
NAMED = [(f"How many {c} in {w}?", w.count(c)) for w, c in
         [("banana", "n"), ("pepper", "p"), ("reassess", "s"), ("parrot", "r"), ("tattoo", "t"),
          ("eraser", "e")]]


@pytest.mark.engine
def test_demo_answers_held_out_questions(evaluator, held_out):
    questions, truths = held_out
    res = evaluator.run(questions, truths)
    acc = sum(r.correct for r in res) / len(res)
    assert acc >= 0.8, acc
    # Natural thinking: the model writes a trace and then "Answer: N" in the s1 layout.
    assert all(r.answer is not None for r in res)
    named = evaluator.run([q for q, _ in NAMED], [n for _, n in NAMED])
    assert [r.answer for r in named] == [n for _, n in NAMED], [r.text for r in named]


@pytest.mark.engine
def test_no_thinking_is_clearly_worse(evaluator, held_out):
    questions, truths = held_out
    natural = evaluator.run(questions, truths)
    capped = evaluator.run(questions, truths, thinking_max=0)
    acc_nat = sum(r.correct for r in natural) / len(natural)
    acc_0 = sum(r.correct for r in capped) / len(capped)
    assert all(r.thinking_tokens == 0 for r in capped)
    assert acc_0 <= acc_nat - 0.4, (acc_0, acc_nat)


@pytest.mark.engine
def test_forced_wait_fixes_early_stops(evaluator):
    """On long words the model glances and stops; a forced Wait makes it count instead."""
    _, rows = build_splits(0, 400, seed=0)
    long_rows = [r for r in rows if json.loads(r.metadata)["lazy"]][:30]
    questions = [r.question for r in long_rows]
    truths = [json.loads(r.metadata)["count"] for r in long_rows]
    natural = evaluator.run(questions, truths)
    forced = evaluator.run(questions, truths, thinking_min=16)
    acc_nat = sum(r.correct for r in natural) / len(natural)
    acc_forced = sum(r.correct for r in forced) / len(forced)
    assert sum(r.continuations for r in forced) >= len(forced) // 2
    assert acc_forced >= acc_nat + 0.3, (acc_nat, acc_forced)


def test_torch_threads_unchanged_by_import():
    """training.demo sets OMP_WAIT_POLICY only; it must not change the thread count at import.
    In a fresh interpreter: this module has imported training.demo already."""
    code = ("import sys, torch; before = torch.get_num_threads(); "
            "assert 'training.demo' not in sys.modules; import training.demo; "
            "print(before, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    before, after = out.stdout.split()
    assert after == before
