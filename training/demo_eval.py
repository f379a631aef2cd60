"""Budget-forcing evaluation of the demo model on held-out letter-counting questions.

Runs the real vLLM engine (CPU) with the server's own budget-forcing logits processor
(server.engine.logits_processor.BudgetLogitsProcessor, driven by SamplingParams.extra_args), greedy,
so the numbers are what `make serve` gives. Sweeps thinking_max (the end delimiter and
"\\nFinal Answer:" are forced at the cap), thinking_min (an end attempt below the minimum is
replaced by "Wait"), and a fixed number of forced "Wait"s as in the s1 paper: suppress the end
of thinking N times, done here by setting thinking_min one past where the previous round
ended (greedy decoding makes that exact).

    python -m training.demo_eval [--model server/demo_model] [--n 400] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from server.budget.formats import FORMATS
from training.demo_data import build_splits

MAX_TOKENS = 600
ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")


@dataclass
class Outcome:
    """One generation: the parsed answer, whether it is right, and the thinking length."""

    answer: int | None
    correct: bool
    thinking_tokens: int
    continuations: int
    text: str


def parse_answer(text: str) -> int | None:
    """The number after the last "Answer:" after the thinking block, or None."""
    end = FORMATS["s1"].end
    tail = text.split(end, 1)[-1] if end in text else ""
    found = ANSWER_RE.findall(tail)
    return int(found[-1]) if found else None


class DemoEvaluator:
    """One engine, many budget settings, over the same prompts."""

    def __init__(self, model: str | Path, max_num_seqs: int = 256) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        from server.budget.formats import FormatTokens, detect_format, get_format
        from server.engine.logits_processor import BudgetLogitsProcessor

        self.tok = AutoTokenizer.from_pretrained(str(model))
        fmt = detect_format(self.tok, str(model))
        if fmt is None or fmt.name != "s1":
            raise RuntimeError(f"demo model should auto-detect as s1, got {fmt}")
        stop = {self.tok.convert_tokens_to_ids("<|im_end|>"), self.tok.eos_token_id}
        self.ft = FormatTokens.build(fmt, self.tok, stop)
        # The same format without the "\nFinal Answer:" nudge after a forced end.
        self.ft_plain = FormatTokens.build(get_format("s1", answer_prefix=""), self.tok, stop)
        self.cont = tuple(self.tok.encode("Wait", add_special_tokens=False))
        self.llm = LLM(model=str(model), enforce_eager=True, dtype="float32",
                       max_model_len=1024, max_num_seqs=max_num_seqs, seed=0,
                       logits_processors=[BudgetLogitsProcessor])

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()

    def prompt_text(self, question: str) -> str:
        text = self.tok.apply_chat_template([{"role": "user", "content": question}],
                                            tokenize=False, add_generation_prompt=True)
        assert self.ft.prompt_opens(text)
        return text

    def prompt_ids(self, question: str) -> list[int]:
        return self.tok.encode(self.prompt_text(question), add_special_tokens=False)

    def run(self, questions: list[str], truths: list[int], *,
            thinking_min: int | list[int] | None = None,
            thinking_max: int | None = None, answer_prefix: bool = True) -> list[Outcome]:
        """Greedy generations with the given budget (thinking_min may be per question).

        answer_prefix=False drops the s1 "\nFinal Answer:" appended after a forced end.
        """
        from vllm import SamplingParams

        from server.budget.machine import replay
        from server.engine.logits_processor import budget_extra_args

        mins = thinking_min if isinstance(thinking_min, list) else [thinking_min] * len(questions)
        texts = [self.prompt_text(q) for q in questions]
        specs, params = [], []
        for lo, text in zip(mins, texts, strict=True):
            ft = self.ft if answer_prefix else self.ft_plain
            # prompt_text as the server passes it: the prompt ends with "think\n", so a cut
            # at 0 tokens forces no newline before the end delimiter.
            spec = ft.spec(thinking_min=lo, thinking_max=thinking_max,
                           continuation_ids=self.cont, prompt_opens=True, prompt_text=text)
            specs.append(spec)
            params.append(SamplingParams(
                temperature=0.0, max_tokens=MAX_TOKENS,
                extra_args=budget_extra_args(spec) if spec.active else None))
        prompts = [{"prompt_token_ids": self.tok.encode(t, add_special_tokens=False)}
                   for t in texts]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out, spec, truth in zip(outs, specs, truths, strict=True):
            ids = list(out.outputs[0].token_ids)
            acct = replay(spec, ids)
            text = self.tok.decode(ids, skip_special_tokens=False)
            ans = parse_answer(text)
            results.append(Outcome(ans, ans == truth, acct.thinking_tokens,
                                   text.count("Wait"), text))
        return results

    def forced_waits(self, questions: list[str], truths: list[int],
                     times: int) -> list[Outcome]:
        """Suppress the end of thinking `times` times (s1's "ignore N times")."""
        res = self.run(questions, truths)
        for _ in range(times):
            res = self.run(questions, truths, thinking_min=[r.thinking_tokens + 1 for r in res])
        return res


def summarize(res: list[Outcome], mask: list[bool] | None = None) -> tuple[float, float]:
    """(accuracy %, mean thinking tokens), optionally over a subset."""
    sel = [r for r, m in zip(res, mask or [True] * len(res), strict=True) if m]
    if not sel:
        return float("nan"), float("nan")
    acc = 100.0 * sum(r.correct for r in sel) / len(sel)
    return acc, sum(r.thinking_tokens for r in sel) / len(sel)


def evaluate(model: str | Path, n: int = 400, seed: int = 0,
             maxes=(0, 8, 16, 24, 32, 48), mins=(16, 32, 48, 64), waits=(1, 2)) -> list[dict]:
    """The full sweep; one row per setting, with accuracy overall and on long (lazy) words."""
    _, rows = build_splits(0, n, seed)
    questions = [r.question for r in rows]
    meta = [json.loads(r.metadata) for r in rows]
    truths = [m["count"] for m in meta]
    lazy = [m["lazy"] for m in meta]
    ev = DemoEvaluator(model)
    table = []

    def record(kind: str, value, res: list[Outcome]) -> None:
        acc, think = summarize(res)
        lazy_acc, _ = summarize(res, lazy)
        rest_acc, _ = summarize(res, [not x for x in lazy])
        table.append({"setting": kind, "value": value, "accuracy": acc, "thinking": think,
                      "acc_long_words": lazy_acc, "acc_short_words": rest_acc,
                      "waits": sum(r.continuations for r in res) / len(res)})
        print(f"{kind:>24} {value!s:>4}: acc {acc:5.1f}% (long {lazy_acc:5.1f}%, "
              f"short {rest_acc:5.1f}%) thinking {think:6.1f} tok", flush=True)

    try:
        t0 = time.time()
        natural = ev.run(questions, truths)
        record("natural", "-", natural)
        for hi in maxes:
            record("thinking_max", hi, ev.run(questions, truths, thinking_max=hi))
        for hi in maxes:
            record("thinking_max, no prefix", hi,
                   ev.run(questions, truths, thinking_max=hi, answer_prefix=False))
        for lo in mins:
            record("thinking_min", lo, ev.run(questions, truths, thinking_min=lo))
        for k in waits:
            record("forced_waits", k, ev.forced_waits(questions, truths, k))
        print(f"evaluation took {time.time() - t0:.0f}s")
    finally:
        ev.close()
    return table


def markdown(table: list[dict], n: int) -> str:
    lines = [f"Held-out questions: {n}; greedy; long words = the questions the model tends to "
             "answer with a glance.", "",
             "| setting | value | accuracy % | long words % | short words % | "
             "mean thinking tokens | Waits per answer |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['setting']} | {r['value']} | {r['accuracy']:.1f} | "
                     f"{r['acc_long_words']:.1f} | {r['acc_short_words']:.1f} | "
                     f"{r['thinking']:.1f} | {r['waits']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from training.demo import DEFAULT_OUT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    table = evaluate(args.model, args.n)
    md = markdown(table, args.n)
    print(md)
    if args.out:
        args.out.write_text(md)


if __name__ == "__main__":
    main()
