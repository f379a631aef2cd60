"""The V1 processor fixes from the GPU-path review (issue 23): a shortened output list
rebuilds the row; a request without a decision seed gets one that every rank shares;
``bad_words`` and ``allowed_token_ids`` are refused together with a budget; a
registered set of newline-ending ids travels as a key."""

from __future__ import annotations

import json
import random

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from server.budget import newline_sets
from server.budget.machine import BudgetError, BudgetSpec
from server.engine.logits_processor import (
    BudgetLogitsProcessor,
    budget_extra_args,
    check_request,
    fallback_seed,
    request_budget,
)
from tests.processor_reference import attempt_prone_logits, random_request

SPEC = BudgetSpec(start_ids=(), end_ids=(10, 11), stop_ids={2}, continuation_ids=(20, 21),
                  thinking_min=3, thinking_max=8)


def _processor(params: list[SamplingParams], outs: list[list[int]]) -> BudgetLogitsProcessor:
    proc = BudgetLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=len(params), removed=[], moved=[],
                                  added=[(i, p, [1], outs[i]) for i, p in enumerate(params)]))
    return proc


def test_a_shortened_output_list_rebuilds_the_row() -> None:
    """After the runner cuts a request's output list in place, the processor decides as
    a processor that only ever saw the shortened list."""
    rng = random.Random(4)
    params = [random_request(rng) for _ in range(12)]
    outs: list[list[int]] = [[] for _ in params]
    proc = _processor(params, outs)
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        logits = proc.apply(attempt_prone_logits(g, len(params)))
        for i, out in enumerate(outs):
            out.append(int(logits[i].argmax()))
    for out in outs:
        del out[len(out) // 2:]  # gpu_model_runner shortens the list on a KV-load failure
    fresh = _processor(params, [list(o) for o in outs])
    logits = attempt_prone_logits(g, len(params))
    got, expected = proc.apply(logits.clone()), fresh.apply(logits.clone())
    assert torch.equal(got, expected)
    assert not torch.equal(got, logits)  # and the step did edit something


def test_a_request_without_a_seed_gets_one_at_admission() -> None:
    params = SamplingParams(temperature=1.0, extra_args=budget_extra_args(SPEC))
    assert "seed" not in params.extra_args["s1_budget"]
    BudgetLogitsProcessor.validate_params(params)
    seed = params.extra_args["s1_budget"]["seed"]
    assert isinstance(seed, int) and request_budget(params) == (SPEC, seed)


def test_the_engine_side_fallback_seed_ignores_process_state() -> None:
    """A request that reaches the engine without a seed: derived from its budget alone."""
    payload = budget_extra_args(SPEC)["s1_budget"]
    random.seed(1)
    a = fallback_seed(dict(payload))
    random.seed(2)
    b = fallback_seed(dict(payload))
    assert a == b
    assert a != fallback_seed({**payload, "thinking_max": 9})
    params = SamplingParams(temperature=1.0, extra_args={"s1_budget": dict(payload)})
    assert request_budget(params) == (SPEC, a)


@pytest.mark.parametrize("field,value", [("bad_words", ["Wait"]), ("allowed_token_ids", [1, 2])])
def test_token_restrictions_are_refused_with_a_budget(field: str, value: list) -> None:
    with_budget = SamplingParams(temperature=0.0, extra_args=budget_extra_args(SPEC, 1),
                                 **{field: value})
    with pytest.raises(BudgetError, match=field):
        BudgetLogitsProcessor.validate_params(with_budget)
    check_request(SamplingParams(temperature=0.0, **{field: value}))  # no budget: fine


def test_registered_newline_ids_travel_as_a_key(caplog: pytest.LogCaptureFixture) -> None:
    ids = frozenset(range(1000, 4000, 3))
    plain = BudgetSpec(start_ids=(), end_ids=(10, 11), stop_ids={2}, continuation_ids=(20,),
                       thinking_max=5, newline_id=12, newline_ids=ids)
    assert plain.to_dict()["newline_ids"] == sorted(ids)  # not registered: the ids themselves
    key = newline_sets.register(ids)
    payload = plain.to_dict()
    assert payload["newline_key"] == key and "newline_ids" not in payload
    assert len(json.dumps(payload)) < 400  # it was ~6 kB with the ids inline
    assert BudgetSpec.from_dict(payload) == plain
    # A worker that never registered the set keeps serving, with the set empty, and says so.
    assert newline_sets.lookup("nl:0:unknown") == frozenset()
    assert "not registered" in caplog.text
