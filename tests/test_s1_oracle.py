"""Ground truth for the s1 semantics: s1-serve's one-pass budget forcing against the
s1 harness loop (``tests/s1_reference.py``), token id for token id.

One engine with the processor installed serves both sides (unbudgeted requests are
untouched by it, see ``test_engine_budget.py``), greedy, float32, prefix caching
off as in the s1 evaluation scripts, each request alone. Our side builds its
request the way the server does: the format's token ids, the budget spec with the
s1 rules, the API's decision seed, and, without ``max_tokens``, the rest of the
context. Logit biases (the same on both sides, applied by vLLM before either
method sees the logits) make the random tiny model try to stop, write newlines or
end its turn where a case needs it.
"""

from __future__ import annotations

import pytest

from server.budget import replay
from server.formats import FORMATS, FormatTokens
from server.settings import DEMO_MODEL
from tests.s1_reference import Format, s1_generate

pytestmark = pytest.mark.engine

CONTEXT = 1024


class Oracle:
    def __init__(self, path) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        from server.engine import stop_ids_for
        from server.logits_processor import BudgetLogitsProcessor

        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.stop_ids = stop_ids_for(self.tok, str(path))
        self.ft = FormatTokens.build(FORMATS["s1"], self.tok, self.stop_ids)
        enc = lambda s: self.tok.encode(s, add_special_tokens=False)  # noqa: E731
        self.fmt = Format(end_ids=enc("<|im_start|>answer"),
                          end_max_ids=enc("<|im_start|>answer\nFinal Answer:"),
                          newline_ids=enc("\n"), continuation_ids=enc("Wait"),
                          stop_ids=sorted(self.stop_ids))
        assert self.fmt.end_max_ids == [*self.ft.end_ids, *self.ft.answer_prefix_ids]
        self.llm = LLM(model=str(path), enforce_eager=True, dtype="float32",
                       max_model_len=CONTEXT, seed=0, enable_chunked_prefill=False,
                       enable_prefix_caching=False,
                       logits_processors=[BudgetLogitsProcessor])

    def prompt(self, question: str) -> tuple[str, list[int]]:
        text = self.tok.apply_chat_template([{"role": "user", "content": question}],
                                            tokenize=False, add_generation_prompt=True)
        if not self.ft.prompt_opens(text):
            text += FORMATS["s1"].start  # the harness and the server open the block alike
        return text, self.tok.encode(text, add_special_tokens=False)

    def reference(self, question: str, **kw):
        _, ids = self.prompt(question)
        return s1_generate(self.llm, self.tok, ids, self.fmt, context=CONTEXT, **kw)

    def ours(self, question: str, *, thinking_min: int | None = None,
             thinking_max: int | None = None, logit_bias=None) -> list[int]:
        from vllm import SamplingParams

        from server.logits_processor import budget_extra_args

        text, ids = self.prompt(question)
        spec = self.ft.spec(thinking_min=thinking_min, thinking_max=thinking_max,
                            continuation_ids=self.fmt.continuation_ids,
                            prompt_opens=self.ft.prompt_opens(text), prompt_text=text)
        params = SamplingParams(temperature=0.0, max_tokens=CONTEXT - len(ids),
                                skip_special_tokens=False, logit_bias=logit_bias,
                                extra_args=budget_extra_args(spec, seed=12345))
        out = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)
        return list(out[0].outputs[0].token_ids)

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


@pytest.fixture(scope="module")
def oracle():
    # The embedded demo model: trained on s1-format traces (its template opens the block),
    # so it thinks, stops and answers on its own, as the cases need.
    o = Oracle(DEMO_MODEL)
    yield o
    o.llm.llm_engine.engine_core.shutdown()


QUESTION = "How many s in horseradish?"


def _bias(o: Oracle, **by_name: float) -> dict[int, float]:
    """Logit biases by name: ``end`` (the end delimiter's first token), ``nl``, ``im_end``,
    ``stops`` (every end-of-turn id)."""
    ids = {"end": [o.ft.end_ids[0]], "nl": o.fmt.newline_ids,
           "im_end": [o.tok.convert_tokens_to_ids("<|im_end|>")], "stops": o.fmt.stop_ids}
    return {t: v for k, v in by_name.items() for t in ids[k]}


def test_natural_end_below_the_maximum(oracle):
    # An end bias under which the model thinks a while, then stops on its own.
    for strength in (0.0, -1.0, 1.0, -2.0):
        bias = _bias(oracle, end=strength)
        ref = oracle.reference(QUESTION, max_thinking=200, n_ignore=None, logit_bias=bias)
        if not ref.cut and ref.thinking:
            break
    assert not ref.cut and 0 < len(ref.thinking) < 200, "the scenario did not occur"
    assert oracle.ours(QUESTION, thinking_max=200, logit_bias=bias) == ref.output


@pytest.mark.parametrize("ends_on_newline", [False, True], ids=["mid-line", "after-newline"])
def test_cut_at_the_maximum(oracle, ends_on_newline):
    # Where the uncapped thinking has (or has not) just written a newline, cut there.
    for strength in (0.0, 0.5, 1.0, 1.5, 2.0):
        bias = _bias(oracle, end=-100.0, stops=-100.0, nl=strength)
        free = oracle.reference(QUESTION, max_thinking=120, n_ignore=None, logit_bias=bias)
        cuts = [n for n in range(4, len(free.thinking))
                if oracle.text(free.thinking[:n]).endswith("\n") == ends_on_newline]
        if cuts:
            break
    assert cuts, "the scenario did not occur"
    cap = cuts[0]
    ref = oracle.reference(QUESTION, max_thinking=cap, n_ignore=None, logit_bias=bias)
    assert ref.cut and len(ref.thinking) == cap
    ours = oracle.ours(QUESTION, thinking_max=cap, logit_bias=bias)
    assert ours == ref.output
    newline_forced = ours[cap] == oracle.fmt.newline_ids[0]
    assert newline_forced is not ends_on_newline


@pytest.mark.parametrize("waits", [1, 2, 3])
def test_continuations(oracle, waits):
    bias = _bias(oracle, end=4.0)
    ref = oracle.reference(QUESTION, max_thinking=600, n_ignore=waits, logit_bias=bias)
    assert ref.continuations == waits and not ref.cut
    # s1-serve's minimum for "this many ignored ends": the reference's final length.
    ours = oracle.ours(QUESTION, thinking_min=len(ref.thinking), logit_bias=bias)
    assert ours == ref.output
    acc = replay(oracle.ft.spec(thinking_min=len(ref.thinking), thinking_max=None,
                                continuation_ids=oracle.fmt.continuation_ids,
                                prompt_opens=True), ours)
    assert acc.continuations == waits


def test_end_of_turn_inside_thinking(oracle):
    # The end delimiter made impossible, the end of turn made likely: the reference must
    # stop on an end of turn (and go on answering), at the weakest bias that does it.
    for strength in (2.0, 4.0, 6.0, 8.0, 12.0):
        bias = _bias(oracle, end=-100.0, im_end=strength)
        ref = oracle.reference(QUESTION, max_thinking=200, n_ignore=None, logit_bias=bias)
        if ref.ended_by in oracle.stop_ids:
            break
    assert ref.ended_by in oracle.stop_ids, "the scenario did not occur"
    assert oracle.ours(QUESTION, thinking_max=200, logit_bias=bias) == ref.output


def test_answer_longer_than_512_tokens(oracle):
    bias = _bias(oracle, end=-100.0, stops=-100.0)
    ref = oracle.reference(QUESTION, max_thinking=16, n_ignore=None, logit_bias=bias)
    answer = len(ref.output) - len(ref.thinking)
    assert ref.cut and answer > 512
    assert oracle.ours(QUESTION, thinking_max=16, logit_bias=bias) == ref.output
