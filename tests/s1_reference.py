"""An independent reference: the s1 evaluation harness's budget-forcing loop.

Written from the harness's description (the s1 repository's lm-evaluation-harness
fork, ``vllm_causallms.py``), with vLLM's offline ``LLM.generate`` and nothing of
the server's state machine:

- the thinking pass generates with ``stop_token_ids`` = the end delimiter's first
  token and the end-of-turn ids, ``max_tokens`` = the thinking cap;
- to ignore an end ``k`` times it runs ``k + 1`` rounds: a round that stopped on
  an end attempt has that token dropped and the continuation string appended,
  and every round runs with ``min_tokens=1`` (no end attempt at its first token);
- after thinking: cut by the cap (``finish_reason == "length"``) appends a newline
  unless the thinking text ends with one, then the end delimiter and
  ``\\nFinal Answer:``; a natural end (an end attempt or an end of turn, dropped)
  appends the end delimiter alone;
- the answer pass generates from there until the end of turn or the context.

Token ids go back in as ``prompt_token_ids`` (no decode/re-encode round trip).
Returns the ids s1-serve should produce for the same request in one pass.

One deliberate difference: the cap here counts the appended continuation strings
as thinking, as s1-serve does (the harness subtracts each round's generated ids,
dropped stop token included, appended string excluded). The oracle's cases with
continuations never reach the cap, so both readings agree there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Format:
    end_ids: list[int]  # "<|im_start|>answer"
    end_max_ids: list[int]  # "<|im_start|>answer\nFinal Answer:"
    newline_ids: list[int]  # "\n"
    continuation_ids: list[int]  # "Wait"
    stop_ids: list[int]  # end-of-turn / EOS ids


@dataclass
class Result:
    output: list[int]  # thinking + delimiters + answer, as one response would carry them
    thinking: list[int]
    continuations: int
    cut: bool
    ended_by: int | None  # the dropped id that ended thinking (None when cut)


def s1_generate(llm: Any, tokenizer: Any, prompt: list[int], fmt: Format, *,
                max_thinking: int, n_ignore: int | None, context: int,
                logit_bias: dict[int, float] | None = None) -> Result:
    """One question through the s1 harness loop, greedy."""
    from vllm import SamplingParams

    until = [fmt.end_ids[0], *fmt.stop_ids]
    thinking: list[int] = []
    continuations = 0
    rounds = 1 if n_ignore is None else n_ignore + 1
    finish = "stop"
    ended_by = None
    last_text = ""
    for i in range(rounds):
        params = SamplingParams(
            temperature=0.0, max_tokens=max_thinking - len(thinking), stop_token_ids=until,
            min_tokens=1 if n_ignore is not None else 0, skip_special_tokens=False,
            logit_bias=logit_bias)
        out = llm.generate([{"prompt_token_ids": prompt + thinking}], params,
                           use_tqdm=False)[0].outputs[0]
        ids = list(out.token_ids)
        finish = out.finish_reason
        ended_by = None
        if finish == "stop" and ids and ids[-1] in until:
            ended_by = ids.pop()  # the end attempt (or end of turn) is dropped
        thinking += ids
        last_text = tokenizer.decode(thinking)
        if finish == "length" or i == rounds - 1:
            break
        thinking += fmt.continuation_ids
        continuations += 1
    cut = finish == "length"
    if cut:
        tail = ([] if last_text.endswith("\n") else fmt.newline_ids) + fmt.end_max_ids
    else:
        tail = list(fmt.end_ids)
    answer_prompt = prompt + thinking + tail
    params = SamplingParams(temperature=0.0, max_tokens=context - len(answer_prompt),
                            skip_special_tokens=False, logit_bias=logit_bias)
    answer = list(llm.generate([{"prompt_token_ids": answer_prompt}], params,
                               use_tqdm=False)[0].outputs[0].token_ids)
    return Result(thinking + tail + answer, thinking, continuations, cut, ended_by)
