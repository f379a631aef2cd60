"""``thinking_waits`` with the empty continuation (the paper's Table 4 "no string" row):
ignore the end of thinking k times and append nothing.

A suppressed attempt leaves no token, so the V1 processor counts suppressions per request
(``SuppressionRecord`` on the request's ``SamplingParams``). Checked here under vLLM's
own V1 call order (``tests/engine_replay.py``: the real ``InputBatch``, sync and async
scheduling), against an s1 harness loop written out by hand: generate greedily, and the
first k times the model picks a stop id, drop it and start a new round from the same
text whose first token may not be a stop id (``min_tokens=1``), nothing appended. With
a preemption and resume between the suppressions, with the batch row reused by another
request meanwhile, with the runner shortening the output in place (a KV-load failure)
while the model decides differently the second time, and sampled (seeded) requests
against a walk of the seeded draws. The pure machine's side, the budget object's count,
and Model Runner V2's refusal are at the end; the real engine is compared with the
harness transcription in ``tests/test_s1_oracle.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from vllm import SamplingParams

from server.budget.draws import uniform_bits
from server.budget.interventions import from_ids
from server.budget.machine import GUARD_WAIT, HOLD, BudgetSpec, BudgetState, replay
from server.engine.logits_processor import BudgetLogitsProcessor, budget_extra_args
from server.engine.suppression_count import SuppressionRecord, suppression_record
from tests.engine_replay import Replay, Req

VOCAB = 64
EOS = 2
START, END, PREFIX = (30, 31), (10, 11), (14, 15)
ATTEMPTS = (END[0], EOS)
DECISION_SEED = 7
ORDERS = pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])


def spec(k: int, hold: bool = False, **kw) -> BudgetSpec:
    return BudgetSpec(start_ids=START, end_ids=END, stop_ids={EOS}, continuation_ids=(),
                      answer_prefix_ids=PREFIX, thinking_waits=k, prompt_opens=True,
                      hold_after_continuation=hold, **kw)


def params(s: BudgetSpec, temperature: float = 0.0) -> SamplingParams:
    return SamplingParams(temperature=temperature, max_tokens=64,
                          extra_args=budget_extra_args(s, DECISION_SEED))


def random_model(key: int, end_bias: float = 4.0):
    """Random logits per (key, position), the attempt ids boosted so that the model
    often tries to end."""
    def model(out: list[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(key * 100_003 + len(out))
        logits = torch.randn(VOCAB, generator=g) * 2
        logits[END[0]] += end_bias
        logits[EOS] += end_bias / 3
        return logits
    return model


def harness(model, k: int, n_tokens: int, hold_first: bool = False) -> tuple[list[int], list[int]]:
    """The s1 harness's ``thinking_n_ignore=k`` with ``ignore_str=""``, greedy, by hand.

    Returns the output ids and the positions at which an end attempt was dropped."""
    out: list[int] = []
    dropped: list[int] = []
    round_start, thinking = hold_first, True
    while len(out) < n_tokens:
        logits = model(out).clone()
        if thinking and round_start:  # min_tokens=1: a round's first token is no stop
            logits[list(ATTEMPTS)] = float("-inf")
        tok = int(logits.argmax())
        round_start = False
        if thinking and tok in ATTEMPTS and len(dropped) < k:
            dropped.append(len(out))  # the round stops; the stop id is dropped, nothing added
            round_start = True
            continue
        if thinking and tok == END[0]:
            out += END  # the harness appends the end delimiter, the answer pass goes on
            thinking = False
            continue
        out.append(tok)
        if tok == EOS:
            break
    return out[:n_tokens], dropped


def processor() -> BudgetLogitsProcessor:
    return BudgetLogitsProcessor(None, torch.device("cpu"), False)


def record_of(p: SamplingParams) -> SuppressionRecord:
    return p.__dict__["_s1_suppressed"]


# ------------------------------------------------------------ greedy against the harness
@ORDERS
@pytest.mark.parametrize("hold", [False, True], ids=["no-hold", "s1-hold"])
@pytest.mark.parametrize("k", [1, 2, 4, 6])
@pytest.mark.parametrize("key", [1, 2, 3])
def test_greedy_equals_the_harness_loop(async_scheduling, hold, k, key):
    model = random_model(key)
    expected, dropped = harness(model, k, 40, hold_first=hold)
    ended = any(t in ATTEMPTS for t in expected)  # by the end delimiter or an end of turn
    assert len(dropped) == k and ended, "the scenario did not occur"
    p = params(spec(k, hold))
    req = Req("a", p, model, max_tokens=40, stop_ids=frozenset({EOS}))
    out = Replay(processor(), VOCAB, async_scheduling).run({0: {"add": [req]}}, 45)["a"]
    assert out == expected
    # The record holds exactly the dropped positions (keys are (position, history hash)).
    assert sorted(pos for pos, _ in record_of(p)) == dropped


@ORDERS
@pytest.mark.parametrize("k", [2, 4, 6])
@pytest.mark.parametrize("key", [1, 2, 3])
def test_preemption_between_the_suppressions(async_scheduling, k, key):
    """Preempted after some but not all k suppressions, its batch row taken by another
    request meanwhile, resumed at another row: the same ids as the harness loop."""
    model = random_model(key)
    expected, dropped = harness(model, k, 40)
    assert len(dropped) == k, "the scenario did not occur"
    at = dropped[k // 2 - 1] + 1  # the step after the (k/2)-th suppression
    assert 0 < sum(d < at for d in dropped) < k
    p = params(spec(k))
    a = Req("a", p, model, max_tokens=40, stop_ids=frozenset({EOS}))
    # "b" takes row 0 while "a" is out: a budget of its own (k=1), a model of its own.
    b_model = random_model(key + 50)
    b = Req("b", params(spec(1)), b_model, max_tokens=12, stop_ids=frozenset({EOS}))
    schedule = {0: {"add": [a]}, at: {"preempt": ["a"], "add": [b]}, at + 3: {"add": [a]}}
    outs = Replay(processor(), VOCAB, async_scheduling).run(schedule, 60)
    assert outs["a"] == expected
    assert outs["b"] == harness(b_model, 1, 12)[0]


@ORDERS
def test_preempted_while_its_last_decision_is_pending(async_scheduling):
    """Preempted right at the step whose suppression is still being read back: the
    resumed request still counts it (the record is the request's, not the row's)."""
    model = random_model(2)
    expected, dropped = harness(model, 3, 40)
    assert len(dropped) == 3
    at = dropped[1] + 1  # apply() of step dropped[1] suppressed; the request leaves now
    p = params(spec(3))
    a = Req("a", p, model, max_tokens=40, stop_ids=frozenset({EOS}))
    outs = Replay(processor(), VOCAB, async_scheduling).run(
        {0: {"add": [a]}, at: {"preempt": ["a"]}, at + 2: {"add": [a]}}, 60)
    assert outs["a"] == expected


def test_a_shortened_output_is_recounted_from_the_record():
    """The runner shortens a row's output in place (a KV-load failure) back to a position
    where the model was suppressed, and the model decides differently the second time:
    the stale suppression is replaced, and the result is the harness loop of the model
    as it decides the second time."""
    k = 3
    base = random_model(1)
    _, dropped = harness(base, k, 40)
    q = dropped[1]
    visits = {"n": 0}

    def model(out: list[int]) -> torch.Tensor:
        logits = base(out)
        if len(out) == q:
            visits["n"] += 1
            if visits["n"] > 1:  # the second visit: no attempt
                logits[list(ATTEMPTS)] -= 100.0
        return logits

    p = params(spec(k))
    a = Req("a", p, model, max_tokens=40, stop_ids=frozenset({EOS}))
    replay = Replay(processor(), VOCAB, async_scheduling=False)
    replay.step(add=[a])
    while len(a.out) < q + 3:
        replay.step()
    assert q in [pos for pos, _ in record_of(p)]  # the first visit's suppression
    del replay.cached["a"].output_token_ids[q:]  # the runner cuts the live list in place
    del a.out[q:]
    for _ in range(60):
        if "a" not in replay.reqs:
            break
        replay.step()

    def second(out: list[int]) -> torch.Tensor:
        logits = base(out)
        if len(out) == q:
            logits[list(ATTEMPTS)] -= 100.0
        return logits

    expected, dropped2 = harness(second, k, 40)
    assert q not in dropped2 and len(dropped2) == k
    assert a.out == expected
    assert sorted(pos for pos, _ in record_of(p)) == dropped2


def test_finished_requests_leave_nothing_behind():
    """The processor holds a request's record only while its last decisions are read back."""
    proc = processor()
    p = params(spec(2))
    a = Req("a", p, random_model(1), max_tokens=20, stop_ids=frozenset({EOS}))
    never_ends = torch.zeros(VOCAB)
    never_ends[5] = 10.0  # "b" never tries: guarded, and counted, at every step
    b = Req("b", params(spec(1)), lambda out: never_ends, max_tokens=40,
            stop_ids=frozenset({EOS}))
    replay = Replay(proc, VOCAB, async_scheduling=True)
    replay.run({0: {"add": [a, b]}}, 24)
    assert "a" not in replay.reqs and "b" in replay.reqs and len(record_of(p)) == 2
    records = [r.record for r in proc.rows.values()]
    pending = proc.counts.pending
    records += [rec for _, rec, _ in pending[2]] if pending else []
    assert records and all(rec is not record_of(p) for rec in records)


# ------------------------------------------------------------------------ sampled
def _walk_sampled(model, out: list[int], k: int, temperature: float) -> tuple[int, int]:
    """Independent of the processor: walk the output with the seeded draws and the
    model's attempt probability; returns (suppressions counted, index of the end)."""
    end = next(i for i, t in enumerate(out) if t in ATTEMPTS)  # the end, or an end of turn
    tried = 0
    for pos in range(end):
        assert out[pos] not in ATTEMPTS
        if tried < k:
            probs = torch.softmax(model(out[:pos]).double() / temperature, dim=0)
            p = float(probs[list(ATTEMPTS)].sum())
            tried += uniform_bits(DECISION_SEED, pos) < math.ldexp(p, 53)
    return tried, end


@ORDERS
@pytest.mark.parametrize("key", [1, 2, 3, 4])
def test_sampled_counts_k_and_survives_preemption(async_scheduling, key):
    k, temperature = 3, 0.8
    model = random_model(key, end_bias=3.0)

    def run(schedule_for):
        a = Req("a", params(spec(k), temperature), model, max_tokens=50,
                stop_ids=frozenset({EOS}), sample_seed=11)
        return Replay(processor(), VOCAB, async_scheduling).run(schedule_for(a), 70)["a"]

    plain = run(lambda a: {0: {"add": [a]}})
    tried, end = _walk_sampled(model, plain, k, temperature)
    assert tried == k, (tried, end)
    resumed = run(lambda a: {0: {"add": [a]}, end // 2: {"preempt": ["a"]},
                             end // 2 + 2: {"add": [a]}})
    assert resumed == plain


# ------------------------------------------------------------------ the pure side
def test_the_machine_takes_the_count_from_the_engine():
    s = BudgetState(spec(2, hold=True))
    assert s.decide() == HOLD  # the harness's first round: min_tokens=1
    s.observe(5)
    assert s.decide() == GUARD_WAIT
    s.suppressed += 1
    s.observe(6)
    assert s.advance(7) == GUARD_WAIT
    s.suppressed += 1
    assert s.decide() == 0 and s.advance(8) == 0  # FREE: the next attempt ends thinking
    # From the ids alone the count is unknown: replay leaves it at 0.
    acc = replay(s.spec, [5, 6, 7, 8, END[0], END[1], 9])
    assert acc.continuations == 0 and acc.thinking_tokens == 4


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i % 26) for i in ids)


@pytest.mark.parametrize(("ids", "count", "end"), [
    ([5, 6, END[0], END[1], 9], 2, "natural"),  # the model's end: all k were suppressed
    ([5, 6, 7], None, "unfinished"),  # stopped inside the block: any of 0..k
])
def test_the_budget_object_reports_only_a_count_the_ids_back(ids, count, end):
    _, details = from_ids(spec(2), ids, _Tok())
    assert details["end"] == end and details["continuation_count"] == count
    assert details["continuations"] == [] and details["thinking_waits"] == 2


def test_the_budget_object_at_the_cap_or_with_a_minimum():
    s = spec(4, thinking_max=3)
    _, details = from_ids(s, [5, 6, 7, END[0], END[1], PREFIX[0], PREFIX[1], 9], _Tok())
    assert details["end"] == "cut" and details["continuation_count"] is None
    # With a minimum, attempts below it after the k-th are suppressed too, uncounted.
    _, details = from_ids(spec(2, thinking_min=3), [5, 6, 7, END[0], END[1], 9], _Tok())
    assert details["end"] == "natural" and details["continuation_count"] is None


def test_the_spec_accepts_no_string_with_waits():
    s = spec(2)
    assert s.active and BudgetSpec.from_dict(s.to_dict()) == s


def test_model_runner_v2_refuses_it():
    from server.budget.machine import BudgetError
    from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2

    with pytest.raises(BudgetError, match="thinking_waits with an empty thinking_continuation"
                       ) as err:
        BudgetLogitsProcessorV2.validate_params(params(spec(2)))
    assert err.value.param == "thinking_waits" and "VLLM_USE_V2_MODEL_RUNNER=0" in str(err.value)
    # A string, or no Waits, is fine on V2.
    BudgetLogitsProcessorV2.validate_params(params(spec(0, thinking_min=3)))
    BudgetLogitsProcessorV2.validate_params(params(BudgetSpec(
        start_ids=START, end_ids=END, stop_ids={EOS}, continuation_ids=(20,),
        thinking_waits=2)))


# -------------------------------------------------- the vLLM facts the count relies on
def test_vllm_v1_keeps_a_preempted_requests_params():
    """The record rides on the request's SamplingParams: vLLM's V1 runner must keep a
    preempted request's cached state (its params included) and drop it only when the
    request finishes; the Struct must take an attribute msgspec does not send on."""
    import inspect

    import msgspec
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    src = inspect.getsource(GPUModelRunner._update_states)
    assert "req_state = self.requests.pop(req_id, None)" in src
    assert src.count("self.requests.pop(") == 1 and "preempted_req_ids" not in src, (
        "vLLM's V1 runner now drops preempted requests' state: the no-string Waits count "
        "(server/engine/suppression_count.py SuppressionRecord) would be lost")
    assert "req_state.sampling_params =" not in src  # never replaced on resume
    p = SamplingParams(temperature=0.0)
    suppression_record(p)[(3, 0)] = True
    assert suppression_record(p) == {(3, 0): True}
    assert b"_s1_suppressed" not in msgspec.msgpack.encode(p)
