"""Separate a teacher's thinking from its answer, whatever the endpoint returns.

Why: OpenAI-compatible servers disagree on where the reasoning goes. s1-serve and vLLM's
reasoning parsers put it in ``message.reasoning`` or ``reasoning_content`` (the client
reads both); others return one text with the thinking between delimiters (``<think>`` ...
``</think>`` for DeepSeek-R1 and Qwen3, ``<|im_start|>think`` ... ``<|im_start|>answer``
for s1), and a template that opens the block in the prompt leaves only the closing one in
the text. :func:`split_thinking` handles all of these; the delimiters can be configured
per teacher.
"""

from __future__ import annotations

from server.budget.formats import FORMATS

# The server's formats (one definition of their delimiters), then Anthropic-style tags.
DEFAULT_DELIMITERS: tuple[tuple[str, str], ...] = (
    *dict.fromkeys((f.start, f.end) for f in (FORMATS["deepseek-r1"], FORMATS["qwen3"],
                                              FORMATS["s1"])),
    ("<thinking>", "</thinking>"),
)


def split_thinking(answer: str, reasoning: str | None,
                   delimiters: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()
                   ) -> tuple[str, str]:
    """(thinking, answer). A separate ``reasoning`` wins; otherwise delimiters in the text.

    With delimiters the thinking is the text between the first start and the first end
    after it (or, when only the end is present, everything before it), and the answer is
    what follows the end. No delimiter at all: no thinking, the whole text is the answer.
    """
    if reasoning and reasoning.strip():
        return reasoning.strip(), answer.strip()
    text = answer or ""
    for start, end in (*delimiters, *DEFAULT_DELIMITERS):
        e = text.find(end)
        if e < 0:
            continue
        s = text.find(start)
        begin = s + len(start) if 0 <= s < e else 0
        return text[begin:e].strip(), text[e + len(end):].strip()
    return "", text.strip()
