"""The scaling plot: accuracy vs mean thinking tokens, one line per method (paper Figure 1).

With ``--samples``, majority voting (parallel scaling, dashed) is drawn in the same axes at
its total thinking tokens, the paper's sequential-vs-parallel comparison.

matplotlib with the Agg backend (files only, no display needed). The x axis is
logarithmic (base 2) like the paper's when every point has thinking tokens,
linear otherwise (a method at 0 tokens cannot be placed on a log axis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_scaling(report: dict[str, Any], path: Path) -> Path:
    """Draw ``report["methods"]`` to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    xs_all: list[float] = []
    for method in report["methods"].values():
        points = sorted(method["points"])
        if not points:
            continue
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        xs_all += xs
        style = "--" if method.get("label", "").startswith("parallel") else "-"
        ax.plot(xs, ys, style, marker="o", label=method["label"])
    if xs_all and min(xs_all) > 0:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    bench = report.get("benchmark", {})
    ax.set_title(f"{bench.get('name', '')} ({report.get('model') or 'model'})")
    parallel = any(m.get("label", "").startswith("parallel") and m["points"]
                   for m in report["methods"].values())
    ax.set_xlabel("Average thinking tokens per question" + (" (all k samples for majority "
                                                           "voting)" if parallel else ""))
    ax.set_ylabel("Accuracy (%)")
    ax.grid(True, alpha=0.3)
    if xs_all:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
