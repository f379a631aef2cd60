"""Part 2 of ``make bench`` (bench/bench_processor.py's docstring): the s1 repository's
stop-and-resubmit loop for the minimum against ours in the engine, on identical work."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.processor_setup import Sample, Workload, timed

WAITS = 2
CAP = 512
BIASES = (("short", 3.0), ("medium", 2.0), ("long", 1.0))
REPS_LOOP = int(os.environ.get("BENCH_REPS_LOOP", "3"))


@dataclass
class RefResult:
    thinking: list[int]
    continuations: int
    segments: list[int]  # lengths of the model-written segments
    capped: bool


def reference_loop(llm: Any, wl: Workload, bias: float) -> list[RefResult]:
    """The s1 repository's method: stop at an end attempt, append Wait, resubmit."""
    from vllm import SamplingParams

    attempt = set(wl.attempt_ids)
    results = [RefResult([], 0, [], False) for _ in wl.prompts]
    active = list(range(len(wl.prompts)))
    for round_ in range(WAITS + 1):
        if not active:
            break
        inputs = [{"prompt_token_ids": wl.prompts[i] + results[i].thinking} for i in active]
        # min_tokens=1 in every round, as the s1 evaluation does when it ignores ends:
        # no end attempt at a round's first token (ours: the processor's hold).
        sps = [SamplingParams(temperature=0.0, max_tokens=CAP - len(results[i].thinking),
                              min_tokens=1, stop_token_ids=list(wl.attempt_ids),
                              logit_bias={wl.ft.end_ids[0]: bias}) for i in active]
        outs = llm.generate(inputs, sps, use_tqdm=False)
        still = []
        for i, o in zip(active, outs, strict=True):
            r, gen = results[i], list(o.outputs[0].token_ids)
            attempted = o.outputs[0].finish_reason == "stop" and bool(gen) and gen[-1] in attempt
            if attempted:
                gen = gen[:-1]
            r.thinking += gen
            r.segments.append(len(gen))
            if not attempted:  # the cap
                r.capped = True
            elif round_ < WAITS and len(r.thinking) < CAP:
                r.thinking += wl.wait_ids
                r.continuations += 1
                if len(r.thinking) < CAP:
                    still.append(i)
        active = still
    return results


def in_engine(llm: Any, wl: Workload, bias: float, minimums: Sequence[int]) -> list[list[int]]:
    """Ours: one request each, the processor replaces attempts below the minimum with Wait."""
    from vllm import SamplingParams

    from server.engine.logits_processor import budget_extra_args

    sps = [SamplingParams(temperature=0.0, max_tokens=CAP, stop_token_ids=list(wl.attempt_ids),
                          logit_bias={wl.ft.end_ids[0]: bias},
                          extra_args=budget_extra_args(wl.spec(m, None)))
           for m in minimums]
    outs = llm.generate([{"prompt_token_ids": p} for p in wl.prompts], sps, use_tqdm=False)
    attempt = set(wl.attempt_ids)
    thinking = []
    for o in outs:
        gen = list(o.outputs[0].token_ids)
        if o.outputs[0].finish_reason == "stop" and gen and gen[-1] in attempt:
            gen = gen[:-1]
        thinking.append(gen)
    return thinking


@dataclass
class LoopRow:
    name: str
    bias: float
    ref: list[Sample]
    ours: list[Sample]
    thinking_tokens: int
    mean_segment: float
    mean_continuations: float
    capped: int
    mismatches: int  # requests whose thinking ids differed in any run

    def med(self, which: str) -> float:
        return statistics.median(s.wall for s in getattr(self, which))

    def speedup(self) -> float:
        return self.med("ref") / self.med("ours")

    def ours_share(self) -> float:
        return statistics.median(s.proc / s.wall for s in self.ours)


def run_loop_comparison(plain: Any, proc: Any, wl: Workload) -> list[LoopRow]:
    rows = []
    for name, bias in BIASES:
        ref: list[Sample] = []
        ours: list[Sample] = []
        expected: list[RefResult] = []
        minimums: list[int] = []
        bad: set[int] = set()
        # ref, ours, ours, ref, ref, ours, ...: the first reference run fixes the minimums.
        for rep in range(REPS_LOOP):
            for which in (("ref", "ours") if rep % 2 == 0 else ("ours", "ref")):
                plain.reset_prefix_cache()
                proc.reset_prefix_cache()
                if which == "ref":
                    sample, got = timed(lambda bias=bias: reference_loop(plain, wl, bias))
                    ref.append(sample)
                    if not expected:
                        expected = got
                        minimums = [len(r.thinking) for r in got]
                    thinking = [r.thinking for r in got]
                else:
                    sample, thinking = timed(
                        lambda bias=bias, minimums=minimums: in_engine(proc, wl, bias, minimums))
                    ours.append(sample)
                bad |= {i for i, (r, t) in enumerate(zip(expected, thinking, strict=True))
                        if r.thinking != t}
        segs = [s for r in expected for s in r.segments]
        row = LoopRow(
            name=name, bias=bias, ref=ref, ours=ours,
            thinking_tokens=sum(minimums),
            mean_segment=statistics.mean(segs),
            mean_continuations=statistics.mean(r.continuations for r in expected),
            capped=sum(r.capped for r in expected),
            mismatches=len(bad),
        )
        rows.append(row)
        print(f"  {name} (bias {bias}): reference {row.med('ref'):.2f}s, ours "
              f"{row.med('ours'):.2f}s, x{row.speedup():.2f}, processor share "
              f"{row.ours_share():.1%}, "
              f"mismatches {row.mismatches}", flush=True)
    return rows
