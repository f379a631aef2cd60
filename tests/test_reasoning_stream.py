"""The s1 reasoning parser streamed as vLLM's chat parser drives it equals its own
non-streamed split, for every chunking of random outputs (no engine: vLLM's parser
loop is replayed from vllm/parser/abstract_parser.py's reasoning phase).

The expected split is written out by hand for fixed cases and, for random ones, is the
parser's non-streamed ``extract_reasoning`` (a different code path: a whole-text
partition, where the stream keeps positions and holds text back)."""

from __future__ import annotations

import random

import pytest

from server.engine.reasoning_parser import S1ReasoningParser
from server.settings import DEMO_MODEL


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DEMO_MODEL))


def _parser(tokenizer, monkeypatch, start: str, end: str, opens: bool) -> S1ReasoningParser:
    from server.engine import reasoning_parser

    reasoning_parser.export_format(start, end)
    parser = S1ReasoningParser(tokenizer)
    parser.prompt_opens = opens
    return parser


def _stream(parser: S1ReasoningParser, chunks: list[str]) -> tuple[str, str]:
    """vLLM's streaming loop: the parser until it says reasoning ended, then raw deltas
    as content."""
    reasoning, content, text, ended = "", "", "", False
    for delta in chunks:
        text += delta
        if ended:
            content += delta
            continue
        message = parser.extract_reasoning_streaming(text[:-len(delta) or None], text, delta,
                                                     [], [], [])
        if message is not None:
            reasoning += message.reasoning or ""
            content += message.content or ""
        ended = parser.is_reasoning_end_streaming([], [])
    return reasoning, content


S1 = ("<|im_start|>think", "<|im_start|>answer")
R1 = ("<think>", "</think>")


@pytest.mark.parametrize(("fmt", "opens", "chunks", "want"), [
    (S1, True, ["\n", "Let", " me", "\n\n", "see", "\n", "<|im_start|>", "answer", "\n",
                "Final", " Answer: 4"], ("Let me\n\nsee", "Final Answer: 4")),
    (S1, False, ["<|im_start|>", "think", "\nhm", "\n", "<|im_start|>answer", "\n", "42"],
     ("hm", "42")),
    (R1, True, ["a<", "/thi", "nk", ">b"], ("a", "b")),  # a delimiter split across chunks
    (R1, True, ["x", "<", "y"], ("x<y", "")),  # held '<' released when it is not the end
    (R1, False, ["plain ", "answer"], ("", "plain answer")),  # no block at all
    (S1, True, ["Wait", "\n\n"], ("Wait", "")),  # trailing newlines never go out
])
def test_streamed_split_by_hand(tokenizer, monkeypatch, fmt, opens, chunks, want):
    parser = _parser(tokenizer, monkeypatch, *fmt, opens)
    assert _stream(parser, chunks) == want
    whole = _parser(tokenizer, monkeypatch, *fmt, opens).extract_reasoning("".join(chunks), None)
    assert tuple(part or "" for part in whole) == want


PIECES = ["a", "b c", "\n", "\n\n", "Wait", " ", "<|im_start|>", "think", "answer",
          "<|im_start|>answer", "<think>", "</think>", "</", "think>", "Final Answer:", "é"]


@pytest.mark.parametrize("seed", range(300))
def test_streamed_split_equals_whole_split(tokenizer, monkeypatch, seed):
    rng = random.Random(seed)
    fmt = rng.choice([S1, R1])
    opens = rng.random() < 0.7
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30)))
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 12))))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    reasoning, content = _stream(_parser(tokenizer, monkeypatch, *fmt, opens), chunks)
    want_r, want_c = _parser(tokenizer, monkeypatch, *fmt, opens).extract_reasoning(text, None)
    ends_partial = any(text.endswith(fmt[1][:n]) for n in range(1, len(fmt[1])))
    if fmt[1] not in text and ends_partial:
        # Documented: the stream holds back what may begin the end delimiter, and an
        # output cut right there never releases it (max_tokens inside the delimiter).
        assert (want_r or "").startswith(reasoning)
        return
    if not opens and not text.lstrip("\n").startswith(fmt[0]) and (
            fmt[0] in text or fmt[1] in text):
        # Documented: when the prompt did not open the block and the output does not open
        # it first thing, the stream commits to what it has seen (text before the block
        # goes out as the answer, an end before any start closes a block from the first
        # character), while the whole-text split can place the block later. Nothing is
        # invented either way.
        assert reasoning in text and content in text
        return
    assert (reasoning, content) == (want_r or "", want_c or "")
