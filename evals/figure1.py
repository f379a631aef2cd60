"""The paper's Figure 1 from s1-eval results: one panel per benchmark, accuracy against
average thinking tokens, budget forcing's points joined (maximum, then Waits).

    python -m evals.figure1 runs/aime24/results.json runs/math500/results.json \\
        runs/gpqa/results.json --out figure1.png

Why a separate figure: ``scaling.png`` (evals/plot.py) shows every method of one run; the
paper's headline figure puts three benchmarks side by side with only the sequential
budget-forcing curve. Each panel takes the ``thinking_max`` points and the ``waits`` points
of one ``results.json`` and draws them as one line ordered by thinking tokens, as the paper
joins its forced-maximum and forced-Wait points. The x axis is logarithmic (base 2) when
every point has thinking tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CURVE_METHODS = ("thinking_max", "waits")


def curve(report: dict[str, Any]) -> list[tuple[float, float]]:
    """The budget-forcing points of one results document, by thinking tokens."""
    points = [tuple(p) for m in CURVE_METHODS
              for p in (report["methods"].get(m) or {}).get("points", [])]
    return sorted((float(x), float(y)) for x, y in points)


def plot_figure1(reports: list[dict[str, Any]], path: Path,
                 titles: list[str] | None = None) -> Path:
    """One panel per report (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    if not reports:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(1, len(reports), figsize=(4.0 * len(reports), 3.6), dpi=120,
                             squeeze=False)
    for i, (ax, report) in enumerate(zip(axes[0], reports, strict=True)):
        points = curve(report)
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], "-o", color="tab:blue")
            if min(x for x, _ in points) > 0:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        name = titles[i] if titles else report.get("benchmark", {}).get("name", f"panel {i}")
        ax.set_title(name)
        ax.set_xlabel("Average thinking time (tokens)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("Accuracy (%)")
    fig.suptitle(f"Test-time scaling with budget forcing ({reports[0].get('model') or 'model'})")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.figure1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results.json files, one panel each")
    p.add_argument("--titles", help="comma-separated panel titles (default: benchmark names)")
    p.add_argument("--out", default="figure1.png")
    args = p.parse_args(argv)
    reports = [json.loads(Path(r).read_text(encoding="utf-8")) for r in args.results]
    titles = args.titles.split(",") if args.titles else None
    if titles is not None and len(titles) != len(reports):
        print("figure1: --titles needs one title per results file", file=sys.stderr)
        return 2
    print(plot_figure1(reports, Path(args.out), titles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
