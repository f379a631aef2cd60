"""The reference the processor tests compare with: random budgeted requests over a toy
vocabulary, and the s1 rules applied row by row with Python floats, the way the rule reads
(force; or guard: did the model try to stop?), independently of the packed plan and the
device code in ``server/engine/logits_edit.py``. Shared by the V1 and V2 processor tests."""

from __future__ import annotations

import random

import torch
from vllm import SamplingParams

from server.budget.draws import uniform_bits
from server.budget.machine import (
    FORCE,
    GUARD,
    GUARD_TURN,
    GUARD_WAIT,
    HOLD,
    BudgetSpec,
    BudgetState,
)
from server.engine.logits_processor import budget_extra_args

VOCAB = 50
EOS, EOS2 = 2, 3
END, PREFIX, CONT = (10, 11), (14, 15), (20, 21)
NL, NL2 = 12, 13  # "\n" and a token whose text ends with one


def random_request(rng: random.Random, with_seed: bool = True) -> SamplingParams:
    lo = rng.choice([None, 0, 3, 8, 40])
    hi = rng.choice([None, 5, 12, 60])
    waits = rng.choice([None, None, 0, 1, 2, 4])
    if lo is None and hi is None and not waits:
        lo = 6
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    s1_rules = rng.random() < 0.6  # newline before a cut, end of turn ends thinking, hold
    # An empty continuation (suppress only) goes with a minimum alone.
    cont = rng.choice([CONT, (CONT[0],), ()] if not waits else [CONT, (CONT[0],)])
    spec = BudgetSpec(start_ids=(30, 31), end_ids=END, stop_ids={EOS, EOS2},
                      continuation_ids=cont, thinking_waits=waits,
                      answer_prefix_ids=PREFIX, thinking_min=lo, thinking_max=hi,
                      prompt_opens=rng.random() < 0.8,
                      newline_id=NL if s1_rules else None, newline_ids={NL, NL2},
                      opens_on_newline=rng.random() < 0.5, turn_ends_thinking=s1_rules,
                      hold_after_continuation=s1_rules)
    temperature = rng.choice([0.0, 0.0, 0.7, 1.0, 1.3])
    seed = rng.getrandbits(40) if with_seed else None
    return SamplingParams(temperature=temperature, max_tokens=100,
                          extra_args=budget_extra_args(spec, seed))


def reference_edit(logits: torch.Tensor, params: list[SamplingParams],
                   outs: list[list[int]]) -> torch.Tensor:
    """The s1 rules, one row at a time: force; mask the attempts (hold); or decide
    whether the model tried (below the minimum or the Waits: to end thinking, replaced
    by the continuation; above them: to end its turn, replaced by the end delimiter).
    Below the Waits the continuation's first token is masked when the model did not try."""
    logits = logits.clone()
    for i, (p, out) in enumerate(zip(params, outs, strict=True)):
        payload = p.extra_args["s1_budget"]
        spec = BudgetSpec.from_dict(payload)
        state = BudgetState(spec)
        state.observe_many(out)
        action = state.decide()
        row = logits[i]
        if action == FORCE:
            tok = state.forced_token
        elif action == HOLD:
            row[list(spec.attempt_ids)] = float("-inf")
            continue
        elif action in (GUARD, GUARD_WAIT, GUARD_TURN):
            attempts = list(spec.turn_ids if action == GUARD_TURN else spec.attempt_ids)
            if p.temperature < 1e-5:
                tried = int(row.argmax()) in attempts
            else:
                probs = torch.softmax(row.double() / p.temperature, dim=0)
                tried = uniform_bits(payload["seed"], state.position) < float(
                    probs[attempts].sum()) * 2**53
            if not tried:
                row[attempts] = float("-inf")
                if action == GUARD_WAIT:
                    row[spec.continuation_ids[0]] = float("-inf")
                continue
            tok = spec.end_ids[0] if action == GUARD_TURN else spec.continuation_ids[0]
        else:
            continue
        row.fill_(float("-inf"))
        row[tok] = 0.0
    return logits


def sample(row: torch.Tensor, temperature: float, g: torch.Generator) -> int:
    if temperature < 1e-5:
        return int(row.argmax())
    return int(torch.multinomial(torch.softmax(row / temperature, 0), 1, generator=g))


def attempt_prone_logits(g: torch.Generator, n: int) -> torch.Tensor:
    logits = torch.randn(n, VOCAB, generator=g) * 2
    # Attempt tokens near the top, so greedy and sampled decisions both go either way.
    logits[:, END[0]] += torch.rand(n, generator=g) * 6
    logits[:, EOS] += torch.rand(n, generator=g) * 3
    logits[:, NL] += torch.rand(n, generator=g) * 3
    return logits
