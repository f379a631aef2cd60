"""The server benchmark's own logic (schedule, pairing, verdicts) on made-up runs.

The benchmark itself is not a test (it measures speed); these check that the numbers
it prints are computed and judged the way its docstring says.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from bench import bench_server as bs
from bench import report as rp
from bench.results import (
    MAX_TOKENS,
    THINKING_MAX,
    RunResult,
    Sample,
    StartResult,
    Workload,
    append_results,
    histogram_quantile,
)
from bench.server_model import ModelFacts
from bench.servers import OURS, THEIRS, ServerKind
from s1_common.stats import quantile


def test_schedule_runs_every_workload_on_every_server_in_abba_order() -> None:
    plan = (Workload(1, 4, False), Workload(64, 8, False), Workload(64, 8, True))
    order = bs.schedule([OURS, THEIRS], plan, rounds=2)
    assert len(order) == 2 * 2 * len(plan)
    pairs = [order[i:i + 2] for i in range(0, len(order), 2)]
    for pair in pairs:  # back to back, same workload, both servers
        assert pair[0][0] == pair[1][0] and {k for _, k in pair} == {OURS, THEIRS}
    firsts = [pair[0][1] for pair in pairs]
    assert firsts == [OURS, THEIRS] * len(plan)  # the order flips every workload


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([3.0, 1.0, 2.0], 0.5, 2.0),
    ([1.0, 2.0, 3.0, 4.0], 0.25, 1.75),  # NumPy's linear method
    ([1.0, 2.0, 3.0, 4.0], 0.99, 3.97),
    ([5.0, float("nan")], 0.5, 5.0),  # NaN (no text token seen) is left out
])
def test_quantile(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == pytest.approx(expected)


def _run(work: Workload, tokens_per_s: float, ttft_s: float = 0.1) -> RunResult:
    wall = 10.0
    count = round(tokens_per_s * wall / MAX_TOKENS)
    samples = [Sample(ttft_s, ttft_s, 1.0, MAX_TOKENS,
                         THINKING_MAX if work.budget else 0) for _ in range(count)]
    return RunResult(work, wall, samples, api_cpu_s=1.0, engine_cpu_s=5.0, idle_cpu_s=0.0)


def _start(kind: ServerKind, runs: list[RunResult]) -> StartResult:
    checks = {"eos_tokens_without_ignore": 1, "eos_tokens_with_ignore": MAX_TOKENS,
              "thinking_capped": [THINKING_MAX], "thinking_free": [MAX_TOKENS]}
    return StartResult(kind, 20.0, checks, runs, [1.0, 2.0])


def _report(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> str:
    plan = (Workload(1, 16, False), *bs._abba(64, 128))
    by_key = {w.key: w for w in plan}
    starts = [_start(kind, [_run(by_key[key], tps) for key, values in table.items()
                            for tps in values])
              for kind, table in ((OURS, ours), (THEIRS, theirs))]
    facts = ModelFacts(Path("model"), 3_670_000, 1, 2)
    info = {"cpu": "test CPU", "cores": "2", "vllm": "0", "torch": "0", "python": "3"}
    return rp.report(starts, plan, 1, facts, info, dt.datetime(2026, 1, 1), 60.0, "cmd")


def test_report_judges_goals_on_paired_ratios() -> None:
    text = _report(
        ours={"plain@1": [300.0], "plain@64": [3000.0, 2000.0], "budget@64": [2900.0, 1900.0]},
        theirs={"plain@1": [300.0], "plain@64": [3000.0, 2000.0],
                "budget@64": [3000.0, 2000.0]})
    rows = [line for line in text.splitlines() if line.startswith("| 64 |")]
    tokens_row = next(r for r in rows if "| tokens/s |" in r)
    assert "| 1.000 (1.00-1.00) | met |" in tokens_row
    # budgeted: 2900/3000 and 1900/2000 -> below 1 on every pair: missed, and said so
    budget_row = next(r for r in rows if r.count("|") > 10)
    assert "**missed**" in budget_row and "Goals: missed: budgeted throughput" in text


def test_report_flags_a_slower_server() -> None:
    text = _report(ours={"plain@1": [200.0], "plain@64": [2000.0, 2000.0]},
                   theirs={"plain@1": [300.0], "plain@64": [3000.0, 3000.0]})
    assert "requests/s at 64 clients: 0.667" in text and "tokens/s at 1 clients: 0.667" in text


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    cumulative = {0.01: 50.0, 0.02: 90.0, 0.04: 100.0, float("inf"): 100.0}
    assert histogram_quantile(cumulative, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(cumulative, 0.7) == pytest.approx(0.015)
    assert histogram_quantile(cumulative, 0.99) == pytest.approx(0.038)
    assert histogram_quantile({0.01: 0.0, float("inf"): 0.0}, 0.5) != \
        histogram_quantile({0.01: 0.0, float("inf"): 0.0}, 0.5)  # NaN: no requests


def test_every_bench_report_is_appended_through_one_writer(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    append_results("## Run 1\n\n| a |\n", results)
    append_results("\n## Run 2\n", results)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n") and text.count("# Benchmark results") == 1
    assert text.endswith("each script's docstring for what is measured and how.\n\n"
                         "## Run 1\n\n| a |\n\n## Run 2\n")
    bench = Path(__file__).resolve().parents[1] / "bench"
    writers = sorted(p.name for p in bench.glob("*.py") if "RESULTS.md\", \"a\"" in p.read_text()
                     or '.open("a")' in p.read_text())
    assert writers == [], f"bench scripts appending to RESULTS.md themselves: {writers}"


def test_http_cpu_is_judged_on_fast_pairs_and_slow_runs_are_counted() -> None:
    """Two pairs of plain@64 runs: in the second, s1-serve's run is in the slow mode
    (engine CPU per token 4x the median), so its HTTP ratio (3.0) is shown among all
    pairs but the goal is judged on the fast pair (1.05: met)."""
    work = Workload(64, 128, False)
    tokens = 100 * MAX_TOKENS

    def run(api_s: float, engine_s: float) -> RunResult:
        samples = [Sample(0.1, 0.1, 1.0, MAX_TOKENS, 0) for _ in range(100)]
        return RunResult(work, 10.0, samples, api_cpu_s=api_s, engine_cpu_s=engine_s,
                         idle_cpu_s=0.0)

    ours = [run(1.05 * tokens / 1e6, 5.0), run(3.0 * tokens / 1e6, 20.0)]
    theirs = [run(1.0 * tokens / 1e6, 5.0), run(1.0 * tokens / 1e6, 5.0)]
    starts = [_start(OURS, ours), _start(THEIRS, theirs)]
    assert rp.slow_runs(starts, work.key) == {id(ours[1])}
    misses: list[str] = []
    row = next(line for line in rp.cpu_text(starts, (work,), misses)
               if line.startswith("| plain@64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:7] == ["1.050 (1.05-1.05)", "met", "2.025", "1 / 0"], row
    assert misses == []
