"""Seeded budget decisions survive batch changes and preemption, in the real vLLM engine.

Below ``thinking_min`` the processor decides with the model's own probability whether an
end attempt happened, from a per-request seed and the output position (server.budget.draws), so
a seeded request must produce the same tokens alone and inside a busy batch. Here the KV
cache holds 20 blocks of 32 tokens: nine requests of up to ~250 tokens cannot all fit, so
vLLM preempts (the latest arrivals first) and later recomputes them, while requests of
different lengths finish and leave the batch. The same holds for ``thinking_waits`` with
no string, whose suppressions leave no token and are counted by the processor per request
(checked to fail when the count is kept per batch row instead).
"""

from __future__ import annotations

import gc

import pytest

from server.budget.formats import FORMATS, FormatTokens
from tests.helpers import shutdown_llm

pytestmark = pytest.mark.engine

KV_BLOCKS, BLOCK = 20, 32
N = 9


def _llm(path):
    from vllm import LLM

    from server.engine.logits_processor import BudgetLogitsProcessor

    return LLM(model=str(path), enforce_eager=True, dtype="float32", max_model_len=256,
               max_num_seqs=16, seed=0, enable_chunked_prefill=False, block_size=BLOCK,
               num_gpu_blocks_override=KV_BLOCKS, disable_log_stats=False,
               logits_processors=[BudgetLogitsProcessor])


@pytest.fixture(scope="module")
def engine(tiny_s1):
    from transformers import AutoTokenizer

    from server.engine.loader import stop_ids_for

    tok = AutoTokenizer.from_pretrained(tiny_s1)
    ft = FormatTokens.build(FORMATS["s1"], tok, stop_ids_for(tok, str(tiny_s1)))
    prompt = tok.apply_chat_template([{"role": "user", "content": "How many r in raspberry?"}],
                                     tokenize=False, add_generation_prompt=True)
    prompt += FORMATS["s1"].start  # as the server does for this template
    llm = _llm(tiny_s1)
    yield llm, tok, ft, prompt
    shutdown_llm(llm)
    del llm
    gc.collect()


def _request(ft, tok, prompt: str, i: int, seed: int):
    """Request i: seeded sampling, a minimum the model keeps trying to end below (the end
    delimiter's first token is favoured), lengths that differ so the batch keeps changing."""
    from vllm import SamplingParams

    from server.engine.logits_processor import budget_extra_args

    cont = tuple(tok.encode("Wait", add_special_tokens=False))
    spec = ft.spec(thinking_min=30 + 15 * i, thinking_max=40 + 20 * i, continuation_ids=cont,
                   prompt_opens=True, prompt_text=prompt)
    params = SamplingParams(temperature=1.0, seed=seed, max_tokens=80 + 20 * i,
                            logit_bias={ft.end_ids[0]: 3.0},
                            extra_args=budget_extra_args(spec, seed))
    return spec, params


def _continuations_in_thinking(spec, out: list[int]) -> int:
    cont, end = list(spec.continuation_ids), spec.end_ids[0]
    thinking = out[:out.index(end)] if end in out else out
    return sum(thinking[i:i + len(cont)] == cont for i in range(len(thinking)))


def _metrics(llm) -> dict:
    return {m.name: m for m in llm.get_metrics()}


def test_seeded_decisions_survive_batch_changes_and_preemption(engine):
    llm, tok, ft, prompt = engine
    ids = {"prompt_token_ids": tok.encode(prompt, add_special_tokens=False)}
    reqs = [_request(ft, tok, prompt, i, seed=100 + i) for i in range(N)]
    preempted_before = _metrics(llm)["vllm:num_preemptions"].value
    alone = [list(llm.generate([ids], [params], use_tqdm=False)[0].outputs[0].token_ids)
             for _, params in reqs]
    assert _metrics(llm)["vllm:num_preemptions"].value == preempted_before  # one fits
    batch = [list(o.outputs[0].token_ids) for o in
             llm.generate([ids] * N, [params for _, params in reqs], use_tqdm=False)]
    metrics = _metrics(llm)
    assert metrics["vllm:num_preemptions"].value > preempted_before, "nothing was preempted"
    per_request = metrics["vllm:request_num_preemptions"]
    assert per_request.sum > 0
    assert batch == alone
    # The runs made guarded decisions: end attempts replaced by the continuation, counted
    # on the raw ids (no state machine): the continuation inside each thinking, which ends
    # at the end delimiter's first token. (The random model could write it itself; with
    # the end token favoured, the forced ones are what make the count.)
    assert sum(_continuations_in_thinking(spec, out) for (spec, _), out in zip(
        reqs, alone, strict=True)) >= N
    # ...and the seed decides them: another seed, other tokens.
    _, other = _request(ft, tok, prompt, 0, seed=999)
    assert list(llm.generate([ids], [other], use_tqdm=False)[0].outputs[0].token_ids) \
        != alone[0]


def test_no_string_waits_survive_preemption(engine):
    """``thinking_waits`` with no string: the suppressions leave no token, so the processor
    counts them per request; a request preempted between its suppressions and recomputed
    must go on counting from where it was, giving the ids it gives alone."""
    from vllm import SamplingParams

    from server.engine.logits_processor import budget_extra_args

    llm, tok, ft, prompt = engine
    ids = {"prompt_token_ids": tok.encode(prompt, add_special_tokens=False)}
    reqs = []
    for i in range(N):
        spec = ft.spec(thinking_min=None, thinking_max=None, thinking_waits=2 + i % 3,
                       continuation_ids=(), prompt_opens=True,
                       prompt_text=prompt)
        reqs.append(SamplingParams(temperature=1.0, seed=200 + i, max_tokens=100 + 20 * i,
                                   logit_bias={ft.end_ids[0]: 3.0},
                                   extra_args=budget_extra_args(spec, 200 + i)))
    preempted_before = _metrics(llm)["vllm:num_preemptions"].value
    alone = [list(llm.generate([ids], [p], use_tqdm=False)[0].outputs[0].token_ids)
             for p in reqs]
    batch = [list(o.outputs[0].token_ids) for o in
             llm.generate([ids] * N, reqs, use_tqdm=False)]
    assert _metrics(llm)["vllm:num_preemptions"].value > preempted_before, "nothing was preempted"
    assert batch == alone
    # The scenario: most requests ended their thinking themselves (after all their Waits),
    # read on the raw ids, and the Waits changed the output (the same seeds without them).
    ended = sum(ft.end_ids[0] in out for out in alone)
    assert ended >= N // 2, ended
    plain = SamplingParams(temperature=1.0, seed=200, max_tokens=100,
                           logit_bias={ft.end_ids[0]: 3.0})
    assert list(llm.generate([ids], [plain], use_tqdm=False)[0].outputs[0].token_ids) \
        != alone[0]
