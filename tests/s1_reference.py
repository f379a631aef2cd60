"""An independent reference: the s1 evaluation harness's budget forcing, transcribed.

What: ``harness_generate`` runs one question the way the s1 repository's
lm-evaluation-harness fork does (``lm_eval/models/vllm_causallms.py``,
``VLLM._model_generate`` with ``generate_until``'s ``until``), on vLLM's offline
``LLM.generate`` with token ids in and out. Why: s1-serve claims to reproduce that
loop in one pass; this file must not borrow anything from the server to be a check
on it (no ``stop_ids_for``, no format registry, no budget spec). Everything it needs
comes from the tokenizer, as the harness takes it.

The harness, step by step (names are its own):

- ``until`` = the task's ``until`` (``[]`` for AIME, MATH500, GPQA) plus the
  tokenizer's eos *string*; ``until_thinking`` = ``["<|im_start|>", *until]``; every
  pass runs with ``skip_special_tokens=False`` and ``spaces_between_special_tokens=False``
  (its ``modify_gen_kwargs``), greedy for these tasks.
- The prompt is the chat template's rendering followed by the ids of
  ``thinking_start`` = ``"<|im_start|>think"`` (no newline: the model writes it).
- ``max_tokens_thinking``: an int, or ``auto`` = ``max_gen_toks - len(longest prompt)
  - len(start ids) - len(ids of "<|im_start|>answer\\nFinal Answer:") - 100``; absent, the
  thinking pass gets ``max_gen_toks``.
- Without ``thinking_n_ignore`` the thinking pass stops on the ``until_thinking``
  *strings*; with it, on their ids as ``stop_token_ids`` (each must be one token)
  with ``min_tokens=1``. vLLM also stops on the generation config's eos ids, which
  the harness does not know about.
- ``thinking_n_ignore=k``: ``k + 1`` rounds with the *same* ``SamplingParams``, so
  every round may generate the full ``max_tokens_thinking``. A round that ends by
  ``length`` (or the last round) is final. Otherwise the round's ids lose a trailing
  ``until_thinking`` id (an eos that is not one of them, e.g. Qwen's
  ``<|endoftext|>``, stays), the ignore string's ids (if any) are appended, and the
  text grows likewise. Afterwards the concatenated ids are *truncated* to
  ``max_tokens_thinking``; the text is not.
- The ending is chosen from the *last round's* ``finish_reason``: ``length`` appends
  a newline unless the (untruncated) text ends with one, then the ids of
  ``"<|im_start|>answer\\nFinal Answer:"``; anything else appends the ids of
  ``"<|im_start|>answer"`` alone, even when the ids were truncated.
- The answer pass runs from there with ``max_tokens=max_gen_toks`` and the ``until``
  strings. Here it is also held to the model's context (vLLM would stop there).

Returns the ids after the prompt (thinking, the appended ending, the answer), the
same span a one-pass server produces after the same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

THINKING_START = "<|im_start|>think"
THINKING_END = "<|im_start|>answer"
UNTIL_THINKING = "<|im_start|>"


@dataclass(frozen=True)
class HarnessTokens:
    """The harness's strings and their ids, built from the tokenizer alone."""

    start_ids: list[int]
    end_ids: list[int]
    end_max_ids: list[int]
    newline_ids: list[int]
    until: list[str]  # the answer pass's stop strings (task until + eos string)
    until_thinking: list[str]
    until_thinking_ids: list[list[int]]
    ignore_str: str | None
    ignore_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_tokenizer(cls, tok: Any, *, task_until: tuple[str, ...] = (),
                       ignore_str: str | None = "Wait") -> HarnessTokens:
        def enc(s: str) -> list[int]:
            return list(tok(s, add_special_tokens=False).input_ids)

        until = [*task_until, tok.decode(tok.eos_token_id)]
        until_thinking = [UNTIL_THINKING, *until]
        return cls(start_ids=enc(THINKING_START), end_ids=enc(THINKING_END),
                   end_max_ids=enc(THINKING_END + "\nFinal Answer:"), newline_ids=enc("\n"),
                   until=until, until_thinking=until_thinking,
                   until_thinking_ids=[enc(s) for s in until_thinking],
                   ignore_str=ignore_str,
                   ignore_ids=enc(ignore_str) if ignore_str is not None else [])


@dataclass
class HarnessResult:
    output: list[int]  # after the prompt (start ids included in the prompt)
    thinking: list[int]  # the thinking ids as the harness keeps them (truncated, stripped)
    tail: list[int]  # the ending the harness appended
    finish_reasons: list[str]  # one per round
    truncated: bool  # the concatenated rounds were longer than the cap
    text: str  # the untruncated thinking text the newline check reads
    cap: int

    @property
    def cut(self) -> bool:
        return self.finish_reasons[-1] == "length"


def auto_cap(max_gen_toks: int, prompt_lens: list[int], ht: HarnessTokens) -> int:
    """``max_tokens_thinking=auto`` as the harness computes it (prompts before the start ids)."""
    return max_gen_toks - max(prompt_lens) - len(ht.start_ids) - len(ht.end_max_ids) - 100


def _strip_until(cont: list[int], until_ids: list[list[int]]) -> list[int]:
    for toks in until_ids:  # in order, as the harness does
        if cont[-len(toks):] == toks:
            cont = cont[:-len(toks)]
    return cont


def harness_generate(llm: Any, prompt: list[int], ht: HarnessTokens, *, max_gen_toks: int,
                     context: int, max_tokens_thinking: int | Literal["auto"] | None = None,
                     thinking_n_ignore: int | None = None,
                     logit_bias: dict[int, float] | None = None) -> HarnessResult:
    """One question through the harness's thinking and answer passes, greedy.

    ``prompt`` is the chat template's rendering as ids, without the start ids (the
    harness appends them). The harness takes this path only when some thinking key is
    given (``max_tokens_thinking`` or ``thinking_n_ignore`` here); without one it runs a
    single plain generation, which needs no reference."""
    from vllm import SamplingParams

    common: dict[str, Any] = dict(temperature=0.0, skip_special_tokens=False,
                                  spaces_between_special_tokens=False, logit_bias=logit_bias)
    if max_tokens_thinking == "auto":
        cap = auto_cap(max_gen_toks, [len(prompt)], ht)
    elif max_tokens_thinking is not None:
        cap = int(max_tokens_thinking)
    else:
        cap = max_gen_toks
    thinking_params = dict(common, max_tokens=cap)
    if thinking_n_ignore is not None:
        assert all(len(x) == 1 for x in ht.until_thinking_ids), "one-token stops only"
        thinking_params.update(min_tokens=1,
                               stop_token_ids=[x[0] for x in ht.until_thinking_ids])
    else:
        thinking_params["stop"] = list(ht.until_thinking)
    params = SamplingParams(**thinking_params)
    request = prompt + ht.start_ids

    def run(ids: list[int], p: Any) -> Any:
        return llm.generate([{"prompt_token_ids": ids}], p, use_tqdm=False)[0].outputs[0]

    rounds = 1 if thinking_n_ignore is None else int(thinking_n_ignore) + 1
    ids: list[int] = []
    text = ""
    finishes: list[str] = []
    pending = list(request)
    for i in range(rounds):
        out = run(pending, params)
        cont = list(out.token_ids)
        finishes.append(out.finish_reason)
        if out.finish_reason == "length" or i == rounds - 1:
            ids += cont
            text += out.text
            break
        cont = _strip_until(cont, ht.until_thinking_ids)
        round_text = out.text
        if ht.ignore_str is not None:
            cont += ht.ignore_ids
            round_text += ht.ignore_str
        ids += cont
        text += round_text
        pending = pending + cont
    truncated = thinking_n_ignore is not None and len(ids) > cap
    if truncated:
        ids = ids[:cap]
    cont = _strip_until(ids, ht.until_thinking_ids)
    if finishes[-1] == "length":
        if text[-1] == "\n" or THINKING_START[0] == "\n":
            tail = list(ht.end_max_ids)
        else:
            tail = ht.newline_ids + ht.end_max_ids
    else:
        tail = list(ht.end_ids)
    answer_prompt = request + cont + tail
    answer_params = SamplingParams(**common, stop=list(ht.until),
                                   max_tokens=min(max_gen_toks, context - len(answer_prompt)))
    answer = list(run(answer_prompt, answer_params).token_ids)
    return HarnessResult(cont + tail + answer, cont, tail, finishes, truncated, text, cap)
