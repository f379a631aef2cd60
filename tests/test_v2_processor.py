"""The Model Runner V2 processor, driven as V2's sampler drives it (``tests/v2_replay.py``).

Checked against two independent references: the V1 processor under vLLM's V1
``InputBatch`` (``tests/engine_replay.py``) and the pure state machine with the
row-by-row s1 edit of ``tests/test_processor_contract.reference_edit``, each request
run alone. Speculative rows: drafts built from the true continuation, corrupted at
random, so many are accepted and many rejected; the output must not change.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from vllm import SamplingParams

from server.budget.draws import uniform_bits as host_uniform_bits
from server.budget.machine import GUARD_WAIT, BudgetSpec, BudgetState
from server.engine.budget_device import decide, observe, premixed_bits, seed_mix, uniform_bits
from server.engine.budget_slots_v2 import SlotTable
from server.engine.logits_processor import (
    BudgetLogitsProcessor,
    budget_extra_args,
    spec_from_params,
)
from server.engine.logits_processor_v2 import BudgetLogitsProcessorV2
from tests import engine_replay, v2_replay
from tests.processor_reference import random_request, reference_edit

VOCAB = 64
EOS, EOS2 = 2, 3
START, END, PREFIX, CONT = (30, 31), (10, 11), (14, 15), (20, 21)
NL, NL2 = 12, 13
INTERESTING = [1, 5, EOS, EOS2, *START, *END, *PREFIX, *CONT, NL, NL2]


def spec(lo: int | None, hi: int | None, opens: bool, s1_rules: bool, cont: tuple[int, ...],
         opens_nl: bool, waits: int | None = None) -> BudgetSpec:
    return BudgetSpec(start_ids=START, end_ids=END, stop_ids={EOS, EOS2}, continuation_ids=cont,
                      answer_prefix_ids=PREFIX, thinking_min=lo, thinking_max=hi,
                      thinking_waits=waits,
                      prompt_opens=opens, newline_id=NL if s1_rules else None,
                      newline_ids={NL, NL2}, opens_on_newline=opens_nl,
                      turn_ends_thinking=s1_rules, hold_after_continuation=s1_rules)


def model_for(key: int, end_bias: float, opens: bool):
    """Random logits per (key, history), attempt tokens boosted; opens the block first
    when the prompt does not."""
    def model(out: list[int]) -> torch.Tensor:
        if not opens and len(out) < len(START):
            logits = torch.zeros(VOCAB)
            logits[START[len(out)]] = 10.0
            return logits
        g = torch.Generator().manual_seed(key * 100_003 + hash(tuple(out)) % 1_000_003)
        logits = torch.randn(VOCAB, generator=g) * 2
        logits[END[0]] += end_bias
        logits[EOS] += end_bias / 2
        logits[NL] += 1.5
        return logits
    return model


def mixed_requests(make, seed: int, count: int = 14) -> list:
    """Min, max, both, Waits (alone, with a minimum, under a cap); greedy and seeded
    sampling; all s1 rules on or off; empty, one- and two-token continuations (empty
    with a minimum only); self-opened blocks; one request without a budget."""
    rng = random.Random(seed)
    reqs = []
    settings = [(4, None, None), (None, 6, None), (3, 9, None), (8, 20, None), (0, 2, None),
                (12, None, None), (None, 0, None), (5, 5, None), (None, None, 2),
                (6, None, 1), (None, 12, 3), (None, None, 4)]
    for i in range(count):
        lo, hi, waits = settings[(i + seed) % len(settings)]
        opens = rng.random() < 0.75
        conts = [CONT, (CONT[0],)] + ([()] if lo and not waits else [])
        s = spec(lo, hi, opens, s1_rules=rng.random() < 0.6, cont=rng.choice(conts),
                 opens_nl=rng.random() < 0.5, waits=waits)
        temperature = rng.choice([0.0, 0.0, 0.8, 1.0])
        extra = budget_extra_args(s, 1000 + i) if i != count - 1 else None
        params = SamplingParams(temperature=temperature, max_tokens=64, extra_args=extra)
        reqs.append(make(f"r{i}", params, model_for(seed * 50 + i, rng.choice([1.0, 3.0, 5.0]),
                                                    opens),
                         max_tokens=14 + rng.randrange(20), sample_seed=i,
                         stop_ids=frozenset({EOS, EOS2})))
    return reqs


def schedule(reqs: list) -> dict[int, dict]:
    by_id = {r.req_id: r for r in reqs}
    return {
        0: {"add": reqs[:5]},
        2: {"add": reqs[5:8], "swap": (0, 3)},
        4: {"preempt": ["r1", "r4"]},
        5: {"add": reqs[8:10], "swap": (1, 2)},
        7: {"add": [by_id["r1"], by_id["r4"], *reqs[10:12]]},
        9: {"preempt": ["r6"], "swap": (2, 5)},
        12: {"add": [by_id["r6"], *reqs[12:]]},
        15: {"swap": (0, 4)},
    }


def reference_outputs(reqs: list[v2_replay.Req]) -> dict[str, list[int]]:
    """Each request alone, the pure state machine and the row-by-row s1 edit."""
    outs = {}
    for req in reqs:
        while not req.finished():
            logits = req.model(list(req.out)).unsqueeze(0)
            if req.params.extra_args:
                logits = reference_edit(logits, [req.params], [req.out])
            req.out.append(v2_replay._sample_row(req, logits[0]))
        outs[req.req_id] = list(req.out)
    return outs


def v2_processor(num_spec: int = 0):
    return lambda lp: BudgetLogitsProcessorV2(None, lp, num_speculative_tokens=num_spec)


def oracle_drafts(truth: dict[str, list[int]]):
    """Up to three drafts: the true continuation, corrupted at random."""
    def drafts(req: v2_replay.Req, rng: random.Random) -> list[int]:
        true = truth[req.req_id][len(req.out):len(req.out) + rng.randrange(4)]
        return [t if rng.random() < 0.75 else rng.choice(INTERESTING) for t in true]
    return drafts


@pytest.mark.parametrize("seed", range(4))
def test_v2_matches_v1_and_the_pure_machine_on_mixed_batches(seed: int) -> None:
    expected = reference_outputs(mixed_requests(v2_replay.Req, seed))
    v1 = engine_replay.Replay(BudgetLogitsProcessor(None, torch.device("cpu"), False), VOCAB,
                              async_scheduling=True)
    v1_reqs = mixed_requests(engine_replay.Req, seed)
    assert v1.run(schedule(v1_reqs), 80) == expected
    v2_reqs = mixed_requests(v2_replay.Req, seed)
    v2 = v2_replay.V2Replay(v2_processor(), VOCAB, order_seed=seed)
    assert v2.run(schedule(v2_reqs), 80) == expected
    joined = [t for out in expected.values() for t in out]
    assert joined.count(CONT[0]) >= 3 and joined.count(PREFIX[0]) >= 2  # rules did fire


@pytest.mark.parametrize("seed", range(4))
def test_drafts_change_nothing(seed: int) -> None:
    """Greedy and seeded sampling alike: a run with drafts (accepted and rejected)
    commits exactly the tokens of a run without."""
    truth = v2_replay.V2Replay(v2_processor(), VOCAB, order_seed=seed).run(
        schedule(mixed_requests(v2_replay.Req, seed)), 80)
    spec_run = v2_replay.V2Replay(v2_processor(3), VOCAB, num_spec=3,
                                  drafts=oracle_drafts(truth), order_seed=seed + 1)
    assert spec_run.run(schedule(mixed_requests(v2_replay.Req, seed)), 80) == truth
    assert spec_run.accepted > 20 and spec_run.drafted - spec_run.accepted > 10


def test_recycled_slots_start_clean() -> None:
    """Four slots, twelve requests: every slot is reused, budgets and all."""
    reqs = mixed_requests(v2_replay.Req, 7, count=12)
    expected = reference_outputs(mixed_requests(v2_replay.Req, 7, count=12))
    replay = v2_replay.V2Replay(v2_processor(), VOCAB, max_reqs=4)
    waiting = list(reqs)
    for _ in range(400):
        live = sum(not r.finished() for r in replay.reqs.values())
        add = [waiting.pop(0) for _ in range(min(len(waiting), 4 - live))]
        replay.step(add=add)
        if not waiting and all(r.finished() for r in replay.reqs.values()):
            break
    assert {r.req_id: r.out for r in reqs} == expected
    assert len(replay.slots_used) == 12 and len(set(replay.slots_used)) <= 4


def test_device_machine_matches_the_pure_machine_on_foreign_tokens() -> None:
    """Arbitrary token streams (not only what the edit allows): state for state."""
    rng = random.Random(3)
    n = 48
    specs = [spec_from_params(random_request(rng))[0] for _ in range(n)]
    table = SlotTable(n, 50, torch.device("cpu"))
    for i, s in enumerate(specs):
        table.set_slot(i, s)
    table.flush()
    pure = [BudgetState(s) for s in specs]
    seen: dict[int, int] = {}
    for _ in range(150):
        rows = table.rows()
        action, token = decide(rows, table.nl)
        toks = []
        for i, state in enumerate(pure):
            want = state.decide()
            assert int(action[i]) == want
            seen[want] = seen.get(want, 0) + 1
            if want == 1:
                assert int(token[i]) == state.forced_token
            tok = state.forced_token if want == 1 and rng.random() < 0.8 else rng.choice(
                [*INTERESTING, rng.randrange(50)])
            toks.append(tok)
            state.observe(tok)
        observe(rows, torch.tensor(toks), torch.ones(n, dtype=torch.bool))
        table.store(rows)
    assert all(seen.get(action, 0) >= 10 for action in (*range(5), GUARD_WAIT)), seen


def test_device_draws_are_the_host_draws() -> None:
    seeds = [0, 1, 7, (1 << 63) - 1, 123456789012345]
    positions = [0, 1, 5, 1000, 123456]
    got = uniform_bits(torch.tensor(seeds).repeat_interleave(5), torch.tensor(positions * 5))
    expected = [host_uniform_bits(s, p) for s in seeds for p in positions]
    assert got.tolist() == expected
    premixed = premixed_bits(torch.tensor([seed_mix(s) for s in seeds]).repeat_interleave(5),
                             torch.tensor(positions * 5))
    assert premixed.tolist() == expected


def run_triton_case(num_spec: int, seed: int = 1) -> None:
    """The Triton path, end to end, against the reference (run by the test below in a
    process where Triton was imported in interpreter mode)."""
    expected = reference_outputs(mixed_requests(v2_replay.Req, seed))
    make = lambda lp: BudgetLogitsProcessorV2(None, lp, num_speculative_tokens=num_spec,  # noqa: E731
                                              kernels="triton")
    replay = v2_replay.V2Replay(make, VOCAB, num_spec=num_spec, order_seed=seed,
                                drafts=oracle_drafts(expected) if num_spec else None)
    got = replay.run(schedule(mixed_requests(v2_replay.Req, seed)), 80)
    assert got == expected, {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert replay.accepted > 10 or not num_spec


@pytest.mark.parametrize("num_spec", [0, 3])
def test_triton_kernels_decide_as_the_reference(num_spec: int) -> None:
    """Triton's interpreter runs the kernels on CPU tensors; it must be on before Triton
    is first imported, hence a fresh process."""
    code = f"from tests.test_v2_processor import run_triton_case; run_triton_case({num_spec})"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
