"""Micro-benchmark of ``BudgetLogitsProcessor.update_state`` + ``apply``, without an engine.

Why: the end-to-end benchmark (``bench_processor.py``) says how much throughput the
processor costs, but on a shared 2-core machine a 1-2% effect is hard to see and
profiling inside vLLM's worker process is awkward. Here the processor is driven the
way the engine drives it (a synthetic ``BatchUpdate`` adding rows whose output lists
the "sampler" then appends to, one ``update_state`` and one ``apply`` per step) on a
fake float32 logits tensor of the benchmark model's vocabulary, and only the two
processor calls are timed (thread CPU time, so other users' load matters less).

Scenarios, each at batch 1, 32 and 64:

- ``no budgets``: rows without a budget (the processor's early return);
- ``free``: budgeted rows past their minimum and far from their maximum (bookkeeping
  only: ``observe`` and ``decide`` per row);
- ``guard, greedy`` / ``guard, sampled``: every row below its minimum, the model never
  tries to stop (the suppression path, with the attempt-probability tensor work);
- ``part-1 schedule``: the end-to-end benchmark's requests (``thinking_min=64``,
  ``thinking_max=200``, 256 steps, greedy, tokens taken as the argmax of random logits
  with the end token biased so that some rows try to stop) — its per-step figure is
  comparable to the in-engine "processor us/step" column of ``RESULTS.md``.

Then a cProfile of the part-1 schedule at batch 1 and 64 shows where the time goes,
and the same scenarios run with :class:`GreedyGuardPrototype`, a sketch of the main
suggested change (a greedy-only fast path for guarded rows), after checking that it
makes exactly the same decisions as the current processor. The prototype lives here
only to size the suggestion; the server does not use it.
Run: ``.venv/bin/python bench/bench_processor_micro.py`` (about a minute).
"""

from __future__ import annotations

import cProfile
import datetime as dt
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_processor as bp  # noqa: E402  (sets the cache variables before vLLM loads)

STEPS = 256
BATCHES = (1, 32, 64)
REPEATS = 5


@dataclass
class Scenario:
    name: str
    thinking_min: int | None
    thinking_max: int | None
    budgeted: bool = True
    temperature: float = 0.0
    attempts: bool = False  # let the end token win the argmax now and then


SCENARIOS = (
    Scenario("no budgets", None, None, budgeted=False),
    Scenario("free", 0, 10**6),
    Scenario("guard, greedy", 10**6, None),
    Scenario("guard, sampled", 10**6, None, temperature=1.0),
    Scenario("part-1 schedule", bp.THINKING_MIN, bp.THINKING_MAX, attempts=True),
)


def prototype_class() -> type:
    """Build :class:`GreedyGuardPrototype` (deferred: importing vLLM is slow)."""
    import torch

    from server.logits_processor import BudgetLogitsProcessor

    class GreedyGuardPrototype(BudgetLogitsProcessor):
        """Guarded greedy rows decided by one argmax instead of the probability math.

        For a greedy row the end attempt happens iff the row's argmax is an attempt
        token, so the index tensors, the two ``max`` and the two ``logsumexp`` (computed
        today for greedy rows too, then unused) reduce to one ``argmax`` over the
        guarded rows and a Python membership test. Sampled rows keep the current path.
        Ties: ``argmax`` takes the lowest id where the current ``>=`` counts a tie as an
        attempt; with float logits an exact tie between distinct tokens is rare.
        """

        def _resolve_guards(self, logits: torch.Tensor, guards: list, force_rows: list[int],
                            force_toks: list[int], supp_rows: list[int],
                            supp_toks: list[int]) -> None:
            if not all(row.greedy for _, row in guards):
                super()._resolve_guards(logits, guards, force_rows, force_toks, supp_rows,
                                        supp_toks)
                return
            if len(guards) == logits.shape[0]:
                best = logits.argmax(dim=1).tolist()
                picks = [best[i] for i, _ in guards]
            else:
                idx = torch.tensor([i for i, _ in guards], dtype=torch.long,
                                   device=logits.device)
                picks = logits.index_select(0, idx).argmax(dim=1).tolist()
            for (index, row), tok in zip(guards, picks, strict=True):
                state = row.state
                attempts = state.spec.attempt_ids
                if tok in attempts:
                    force_rows.append(index)
                    force_toks.append(state.guard_continuation_token)
                else:
                    supp_rows.extend([index] * len(attempts))
                    supp_toks.extend(attempts)

    return GreedyGuardPrototype


class Driver:
    """Feeds one processor the way vLLM's persistent batch does, for ``STEPS`` steps."""

    def __init__(self, wl: bp.Workload, sc: Scenario, batch: int, seed: int = 0,
                 cls: type | None = None) -> None:
        import torch
        from vllm import SamplingParams

        from server.logits_processor import BudgetLogitsProcessor, budget_extra_args

        cls = cls or BudgetLogitsProcessor

        self.torch = torch
        self.sc, self.batch, self.wl = sc, batch, wl
        extra = (budget_extra_args(wl.spec(sc.thinking_min, sc.thinking_max), seed=seed)
                 if sc.budgeted else None)
        params = SamplingParams(max_tokens=STEPS, temperature=sc.temperature, extra_args=extra)
        self.proc = cls(None, torch.device("cpu"), False)
        self.outs: list[list[int]] = [[] for _ in range(batch)]
        self.added = [(i, params, wl.prompts[i % len(wl.prompts)], self.outs[i])
                      for i in range(batch)]
        gen = torch.Generator().manual_seed(seed)
        vocab = 512
        self.logits = [torch.randn(batch, vocab, generator=gen) for _ in range(16)]
        attempt = list(wl.attempt_ids)
        for t in self.logits:
            # Never an end attempt, unless the scenario wants some (one step in ~40 per row).
            t[:, attempt] = -30.0
            if sc.attempts:
                hit = torch.rand(batch, generator=gen) < 1 / 40
                t[hit, wl.attempt_ids[0]] = 30.0

    def run(self, timer: Callable[[], float] = time.thread_time) -> float:
        """Seconds spent inside update_state + apply over all steps.

        Thread CPU time by default: on a shared machine, time spent descheduled would
        otherwise dominate figures of a few microseconds.
        """
        from vllm.v1.sample.logits_processor import BatchUpdate

        proc, spent = self.proc, 0.0
        update: Any = BatchUpdate(batch_size=self.batch, removed=[], added=self.added, moved=[])
        for step in range(STEPS):
            logits = self.logits[step % len(self.logits)].clone()
            t0 = timer()
            proc.update_state(update)
            out = proc.apply(logits)
            spent += timer() - t0
            update = None
            toks = out.argmax(dim=1).tolist()  # the "sampler", not timed
            for row, tok in zip(self.outs, toks, strict=True):
                row.append(tok)
        return spent


def measure(wl: bp.Workload, cls: type | None,
            scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[tuple[str, int, float]]:
    results = []
    for sc in scenarios:
        for batch in BATCHES:
            samples = [Driver(wl, sc, batch, seed=r, cls=cls).run() / STEPS * 1e6
                       for r in range(REPEATS)]
            results.append((sc.name, batch, statistics.median(samples)))
            print(f"  {sc.name:16s} batch {batch:2d}: {results[-1][2]:8.1f} us/step", flush=True)
    return results


def same_decisions(wl: bp.Workload, cls: type) -> bool:
    """True when ``cls`` produces the same tokens as the current processor everywhere."""
    for sc in SCENARIOS:
        for batch in BATCHES:
            a, b = Driver(wl, sc, batch, seed=7), Driver(wl, sc, batch, seed=7, cls=cls)
            a.run()
            b.run()
            if a.outs != b.outs:
                print(f"  prototype differs: {sc.name}, batch {batch}")
                return False
    return True


def table(results: list[tuple[str, int, float]], label: str) -> list[str]:
    lines = [f"| {label} | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
             "|---|" + "---:|" * len(BATCHES)]
    for name in dict.fromkeys(r[0] for r in results):
        cells = [f"{us:.0f} us" for n, _, us in results if n == name]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def profile(wl: bp.Workload, batch: int, top: int = 14) -> str:
    sc = SCENARIOS[-1]
    prof = cProfile.Profile()
    for r in range(3):
        driver = Driver(wl, sc, batch, seed=r)
        prof.enable()
        driver.run()
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    import torch

    torch.set_num_threads(1)  # the engine's worker runs with one torch thread here
    model_dir, _ = bp.build_bench_model()
    wl = bp.make_workload(model_dir)
    print(f"per-step processor time (median of {REPEATS} x {STEPS} steps), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("current processor:")
    current = measure(wl, None)
    proto_cls = prototype_class()
    print("prototype (greedy guard fast path):")
    same = same_decisions(wl, proto_cls)
    greedy = tuple(sc for sc in SCENARIOS if sc.budgeted and sc.temperature == 0.0)
    proto = measure(wl, proto_cls, greedy)
    print()
    print("\n".join(table(current, "current processor, us/step")))
    print()
    print("\n".join(table(proto, "prototype: greedy guard fast path, us/step")))
    print(f"\nprototype makes the same decisions as the current processor: {same}")
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    bp.append_results("\n".join([
        f"## Micro-benchmark {now} (bench/bench_processor_micro.py)", "",
        f"Processor CPU time per engine step (update_state + apply), median of {REPEATS} x "
        f"{STEPS} steps, fake logits, one torch thread; load average at the end {load}.", "",
        *table(current, "current processor"), "",
        *table(proto, "prototype: greedy guard fast path"), "",
        f"The prototype makes the same decisions as the current processor: {same}.", ""]))
    for batch in (1, 64):
        print(f"\ncProfile, part-1 schedule, batch {batch} (3 x {STEPS} steps, by own time):")
        print(profile(wl, batch))


if __name__ == "__main__":
    main()
