"""The per-choice ``budget`` object, checked against the token ids (no engine).

A scripted "model" is run through the real state machine with the demo model's
tokenizer and s1 format (what the engine does, step by step); the object the server
builds from those ids (:func:`server.budget.interventions.from_ids`) must say exactly
where the forced strings are in the ids and in the reasoning text a client gets (the
s1 reasoning parser's split of the decoded output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from server.budget.formats import FORMATS, FormatTokens
from server.budget.interventions import char_offsets, from_ids
from server.budget.machine import BudgetSpec, BudgetState
from server.settings import DEMO_MODEL
from tests.budget_driver import drive


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL)


@pytest.fixture(scope="module")
def ft(tok) -> FormatTokens:
    return FormatTokens.build(FORMATS["s1"], tok, {tok.convert_tokens_to_ids("<|im_end|>")})


def make_spec(ft: FormatTokens, tok, lo: int | None = None, hi: int | None = None,
              cont: str = "Wait") -> BudgetSpec:
    return ft.spec(thinking_min=lo, thinking_max=hi, prompt_opens=True, prompt_text="think\n",
                   continuation_ids=tok.encode(cont, add_special_tokens=False))


@pytest.fixture(scope="module")
def ordinary_id(tok) -> int:
    """What a held step's masked attempt falls back to: an ordinary token ("a")."""
    return tok.encode("a", add_special_tokens=False)[0]


@pytest.fixture(scope="module")
def run(ordinary_id) -> Callable[..., list[int]]:
    """The engine's loop, greedy; a held step's masked attempt falls back to ``ordinary_id``."""
    def run(spec: BudgetSpec, model: Callable[[int], int], limit: int = 400) -> list[int]:
        return drive(BudgetState(spec), model, limit, second=ordinary_id)

    return run


@dataclasses.dataclass
class Split:
    """The server's accounting of one choice (its ``budget`` object and state)."""

    details: dict
    state: BudgetState

    def budget_details(self) -> dict:
        return self.details

    @property
    def reasoning_tokens(self) -> int:
        return self.state.thinking


def split(spec: BudgetSpec, tok, ids: list[int]) -> tuple[Split, str]:
    """The budget object from the ids, and the reasoning text a client receives: the s1
    reasoning parser's split of vLLM's decoded output (special tokens kept, as the parser
    asks for them when the delimiters are special)."""
    from server.engine import reasoning_parser

    state, details = from_ids(spec, ids, tok)
    reasoning_parser.export_format(FORMATS["s1"].start, FORMATS["s1"].end)
    parser = reasoning_parser.S1ReasoningParser(tok)
    parser.prompt_opens = spec.prompt_opens
    text = parser.extract_reasoning(tok.decode(ids, skip_special_tokens=False), None)[0]
    return Split(details, state), text or ""


def stopper(tok, words: str):
    """A model that writes ``words`` then tries to end thinking at every step after."""
    ids = tok.encode(words, add_special_tokens=False)
    end = tok.encode("<|im_start|>answer\nAnswer: 3<|im_end|>", add_special_tokens=False)
    def model(pos: int) -> int:
        if pos < len(ids):
            return ids[pos]
        return end[0]

    return model


def test_forced_continuations_are_located_exactly(tok, ft, run):
    spec = make_spec(ft, tok, lo=12)
    ids = run(spec, stopper(tok, "r1a1s2"))
    sp, text = split(spec, tok, ids)
    b = sp.budget_details()
    # Counted on the ids: thinking opens at output 0 (the prompt opened it) and ends at the
    # end delimiter; the answer is the rest (the scripted model never ends its turn).
    end = list(spec.end_ids)
    k = next(i for i in range(len(ids)) if ids[i:i + len(end)] == end)
    thinking_ids = ids[:k]
    cont = spec.continuation_ids
    # The model writes 6 tokens, then tries to end at every step: guarded (the attempt
    # becomes Wait, 4 tokens here) and held (its next choice, "a", is written) alternate
    # until the 12-token minimum is passed: 6 + (4 + 1) * 2 = 16 thinking tokens.
    assert b["thinking_tokens"] == sp.reasoning_tokens == len(thinking_ids) == 16
    assert b["answer_tokens"] == len(ids) - k - len(end)
    assert b["continuation_count"] == len(b["continuations"]) == thinking_ids.count(cont[0]) == 2
    wait_text = tok.decode(list(cont))
    for m in b["continuations"]:
        # the token ids: the continuation string starts at that output index ...
        assert ids[m["output_index"]:m["output_index"] + len(cont)] == list(cont)
        # ... which is thinking token number m["token"] (thinking opens at output 0 here)
        assert thinking_ids[m["token"]] == cont[0] and m["output_index"] == m["token"]
        # ... and the reasoning text shows it at m["char"]
        assert text[m["char"]:].startswith(wait_text.strip())
        assert text[:m["char"]] == tok.decode(thinking_ids[:m["token"]]).lstrip("\n")
    assert b["hit_max"] is False and b["cut"] is None
    assert b["natural_end"] is True and b["end"] == "natural"
    assert b["thinking_min"] == 12 and b["thinking_max"] is None
    assert b["thinking_continuation"] == "Wait"


def test_the_cut_is_located_exactly(tok, ft, run, ordinary_id):
    spec = make_spec(ft, tok, hi=7)
    ids = run(spec, lambda pos: ordinary_id)  # never stops by itself
    sp, text = split(spec, tok, ids)
    b = sp.budget_details()
    assert b["hit_max"] is True and b["end"] == "cut" and b["natural_end"] is False
    assert b["cut"]["token"] == 7 == b["thinking_tokens"]
    assert b["cut"]["char"] == len(text)
    # the forced end starts at the cut: the newline (thinking did not end with one), then
    # the end delimiter, then the answer prefix
    i = b["cut"]["output_index"]
    assert ids[i] == spec.newline_id and ids[i + 1:i + 1 + len(spec.end_ids)] == list(spec.end_ids)
    assert b["continuation_count"] == 0 and b["continuations"] == []
    answer = ids[i + 1 + len(spec.end_ids):]  # the prefix and what follows, to end of turn
    assert b["answer_tokens"] == len(answer) - (answer[-1] in spec.stop_ids)


def test_cut_after_continuations_and_at_zero(tok, ft, run, ordinary_id):
    spec = make_spec(ft, tok, lo=6, hi=10)
    end = spec.end_ids[0]
    ids = run(spec, lambda pos: end if pos == 2 else ordinary_id)  # one early stop, then on
    b = split(spec, tok, ids)[0].budget_details()
    # The attempt at token 2 becomes Wait (tokens 2-5); the model then thinks on to the cut.
    assert b["thinking_tokens"] == 10 and b["hit_max"] and b["continuation_count"] == 1
    assert [m["token"] for m in b["continuations"]] == [2] and b["cut"]["token"] == 10
    zero = make_spec(ft, tok, hi=0)
    ids = run(zero, lambda pos: ordinary_id, limit=12)
    sp, text = split(zero, tok, ids)
    b = sp.budget_details()
    assert text == "" and b["cut"] == {"token": 0, "char": 0, "output_index": 0}


def test_the_models_own_wait_is_not_forced(tok, ft):
    spec = make_spec(ft, tok, lo=3)
    ids = tok.encode("r1 Wait, r2 Wait again<|im_start|>answer\nAnswer: 2<|im_end|>",
                     add_special_tokens=False)
    b = split(spec, tok, ids)[0].budget_details()
    assert b["continuation_count"] == 0 and b["end"] == "natural"


def test_other_endings(tok, ft):
    spec = make_spec(ft, tok)
    eot = tok.encode("r1<|im_end|>", add_special_tokens=False)
    turn_off = dataclasses.replace(spec, turn_ends_thinking=False)
    assert split(turn_off, tok, eot)[0].budget_details()["end"] == "end_of_turn"
    open_ids = tok.encode("r1a1s1", add_special_tokens=False)  # max_tokens ran out
    b = split(spec, tok, open_ids)[0].budget_details()
    assert b["end"] == "unfinished" and b["natural_end"] is False
    assert b["thinking_min"] is None and b["thinking_continuation"] is None
    closed = dataclasses.replace(spec, prompt_opens=False)
    b = split(closed, tok, tok.encode("Answer: 2<|im_end|>", add_special_tokens=False))[0] \
        .budget_details()
    assert b["end"] == "no_thinking" and b["thinking_tokens"] == 0 and b["answer_tokens"] > 0


def test_char_offsets_strip_leading_newlines_and_clip():
    def decode(ids):
        return "".join(["\n", "ab", "cd", "Wait"][i] for i in ids)

    assert char_offsets(decode, [0, 1, 2, 3], [0, 1, 3, 4], 9) == [0, 0, 4, 8]
    assert char_offsets(decode, [0, 1, 2, 3], [3], 2) == [2]  # a stop string cut the text
