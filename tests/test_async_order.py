"""Budget forcing under vLLM's GPU call order: sync and async scheduling give the same tokens.

Drives vLLM's real ``InputBatch`` with the processor (see ``tests/engine_replay.py``).
Expected outputs of the scripted cases are written out by hand from the s1 rules,
not computed by the state machine; the mixed random batch is checked for identical
outputs under the two orders and against limits counted from the raw ids.
"""

from __future__ import annotations

import pytest
import torch
from vllm import SamplingParams

from server.budget.machine import BudgetSpec
from server.engine.logits_processor import BudgetLogitsProcessor, budget_extra_args
from tests.engine_replay import Replay, Req

VOCAB = 64
EOS = 2
START, END, PREFIX, CONT = (30, 31), (10, 11), (14, 15), (20, 21)
ORDERS = pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])


def spec(lo: int | None = None, hi: int | None = None, opens: bool = True) -> BudgetSpec:
    return BudgetSpec(start_ids=START, end_ids=END, stop_ids={EOS}, continuation_ids=CONT,
                      answer_prefix_ids=PREFIX, thinking_min=lo, thinking_max=hi,
                      prompt_opens=opens)


def params(s: BudgetSpec, temperature: float = 0.0, seed: int | None = 7) -> SamplingParams:
    return SamplingParams(temperature=temperature, max_tokens=64,
                          extra_args=budget_extra_args(s, seed))


def prefers(tok: int) -> torch.Tensor:
    logits = torch.zeros(VOCAB)
    logits[tok] = 10.0
    return logits


def scripted(seq: list[int], then: int):
    """A model that emits ``seq`` and then ``then`` forever (by argmax)."""
    return lambda out: prefers(seq[len(out)] if len(out) < len(seq) else then)


def random_model(key: int, end_bias: float):
    """Random logits per (key, position), the end-delimiter's first token boosted."""
    def model(out: list[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(key * 100_003 + len(out))
        logits = torch.randn(VOCAB, generator=g) * 2
        logits[END[0]] += end_bias
        logits[EOS] += end_bias / 2
        return logits
    return model


def opening_block_first(model):
    """``model``, but the first tokens it emits are the start delimiter."""
    def wrapped(out: list[int]) -> torch.Tensor:
        return prefers(START[len(out)]) if len(out) < len(START) else model(out)
    return wrapped


def processor() -> BudgetLogitsProcessor:
    return BudgetLogitsProcessor(None, torch.device("cpu"), False)


def run_one(req: Req, async_scheduling: bool, steps: int) -> list[int]:
    replay = Replay(processor(), VOCAB, async_scheduling)
    return replay.run({0: {"add": [req]}}, steps)[req.req_id]


@ORDERS
def test_max_forces_multi_token_end_then_answer_prefix(async_scheduling: bool) -> None:
    req = Req("a", params(spec(hi=5)), scripted([], 1), max_tokens=12)
    out = run_one(req, async_scheduling, 14)
    assert out == [1, 1, 1, 1, 1, 10, 11, 14, 15, 1, 1, 1]


@ORDERS
def test_min_replaces_every_attempt_with_the_continuation(async_scheduling: bool) -> None:
    req = Req("b", params(spec(lo=6)), scripted([], END[0]), max_tokens=12)
    out = run_one(req, async_scheduling, 14)
    # Six thinking tokens of "Wait"s, then the model's own end (no answer prefix), then
    # the answer, where the end token is an ordinary token.
    assert out == [20, 21, 20, 21, 20, 21, 10, 11, 10, 10, 10, 10]


@ORDERS
def test_min_replaces_end_of_turn_too(async_scheduling: bool) -> None:
    req = Req("c", params(spec(lo=3)), scripted([], EOS), max_tokens=6)
    out = run_one(req, async_scheduling, 8)
    assert out == [20, 21, 20, 21, EOS, EOS]


@ORDERS
def test_block_the_model_opens_itself_is_budgeted(async_scheduling: bool) -> None:
    req = Req("d", params(spec(hi=3, opens=False)), scripted([5, 30, 31], 1), max_tokens=12)
    out = run_one(req, async_scheduling, 14)
    assert out == [5, 30, 31, 1, 1, 1, 10, 11, 14, 15, 1, 1]


@ORDERS
def test_max_zero_answers_at_once(async_scheduling: bool) -> None:
    req = Req("e", params(spec(hi=0)), scripted([], 1), max_tokens=6)
    assert run_one(req, async_scheduling, 8) == [10, 11, 14, 15, 1, 1]


def test_async_replay_really_shows_placeholders_to_update_state() -> None:
    """The harness must put -1 where the GPU runner does, or the async tests prove nothing."""
    replay = Replay(processor(), VOCAB, async_scheduling=True)
    replay.run({0: {"add": [Req("a", params(spec(hi=5)), scripted([], 1), max_tokens=8)]}}, 8)
    assert replay.placeholders_seen_by_update_state >= 6
    sync = Replay(processor(), VOCAB, async_scheduling=False)
    sync.run({0: {"add": [Req("a", params(spec(hi=5)), scripted([], 1), max_tokens=8)]}}, 8)
    assert sync.placeholders_seen_by_update_state == 0


def _mixed_requests() -> list[Req]:
    """Twelve requests: min, max, both, none; greedy and seeded sampling; self-opened
    blocks; two children of one n=2 request sharing one SamplingParams object."""
    reqs = []
    settings = [(4, None), (None, 6), (3, 9), (8, 20), (0, 2), (12, None)]
    for i in range(10):
        lo, hi = settings[i % len(settings)]
        temperature = 0.0 if i % 2 == 0 else 0.8
        opens = i % 3 != 2
        model = random_model(i, end_bias=4.0 if i % 4 else 1.0)
        if not opens:
            model = opening_block_first(model)
        reqs.append(Req(f"r{i}", params(spec(lo, hi, opens), temperature, seed=1000 + i),
                        model, max_tokens=24 + i, sample_seed=i, stop_ids=frozenset({EOS})))
    shared = params(spec(5, 12), temperature=1.0, seed=None)  # n=2: one params object
    shared.extra_args["s1_budget"]["seed"] = 99
    reqs += [Req(f"{k}_n2", shared, random_model(50 + k, 3.0), max_tokens=30, sample_seed=50 + k)
             for k in range(2)]
    return reqs


def _mixed_schedule(reqs: list[Req]) -> dict[int, dict]:
    by_id = {r.req_id: r for r in reqs}
    return {
        0: {"add": reqs[:5]},
        2: {"add": reqs[5:8], "swap": (0, 3)},
        4: {"preempt": ["r1", "r4"]},
        5: {"add": [by_id["0_n2"], by_id["1_n2"]], "swap": (1, 2)},
        7: {"add": [by_id["r1"], by_id["r4"], *reqs[8:10]]},
        9: {"preempt": ["r6"], "swap": (2, 5)},
        12: {"add": [by_id["r6"]]},
        15: {"swap": (0, 4)},
    }


def _check_limits(req_id: str, out: list[int], s: BudgetSpec) -> None:
    """Budgets counted from the raw ids, independently of the state machine."""
    ids = list(out)
    if not s.prompt_opens:
        assert ids[:2] == list(START), req_id
        ids = ids[2:]
    if END[0] in ids:
        k = ids.index(END[0])
        thinking = ids[:k]
        assert ids[k:k + 2] == list(END), req_id
        if s.thinking_max is not None and k == s.thinking_max:
            assert ids[k + 2:k + 4] == list(PREFIX)[:len(ids[k + 2:k + 4])], req_id
    else:
        thinking = ids[:ids.index(EOS)] if EOS in ids else ids
    if s.thinking_max is not None:
        assert len(thinking) <= s.thinking_max, req_id
    if s.thinking_min is not None and len(thinking) < s.thinking_min:
        assert len(thinking) == len(ids), f"{req_id} ended thinking under its minimum"


def test_mixed_batch_is_identical_under_sync_and_async_order() -> None:
    results = {}
    for async_scheduling in (False, True):
        reqs = _mixed_requests()
        replay = Replay(processor(), VOCAB, async_scheduling)
        results[async_scheduling] = replay.run(_mixed_schedule(reqs), 60)
    assert results[False] == results[True]
    reqs = _mixed_requests()
    for req in reqs:
        out = results[False][req.req_id]
        assert len(out) == req.max_tokens or out[-1] == EOS
        s = BudgetSpec.from_dict(req.params.extra_args["s1_budget"])
        _check_limits(req.req_id, out, s)
    # The scenario exercises what it claims: forced continuations and forced ends happen.
    joined = [t for out in results[False].values() for t in out]
    assert joined.count(CONT[0]) >= 5 and joined.count(PREFIX[0]) >= 3


def test_preempted_request_resumes_to_the_same_tokens() -> None:
    outs = []
    for preempt in (False, True):
        req = Req("p", params(spec(3, 9), temperature=0.9, seed=5), random_model(3, 3.0),
                  max_tokens=20, sample_seed=3)
        schedule: dict[int, dict] = {0: {"add": [req]}}
        if preempt:
            schedule[4] = {"preempt": ["p"]}
            schedule[6] = {"add": [req]}
        outs.append(Replay(processor(), VOCAB, async_scheduling=True).run(schedule, 30)["p"])
    assert outs[0] == outs[1]
