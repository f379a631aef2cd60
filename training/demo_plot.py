"""Plot the demo model's budget curves from training/DEMO_RESULTS.md (accuracy vs thinking).

The table there is written by ``training.demo_eval``; this reads it back so the README's
picture always matches the recorded numbers. ``python -m training.demo_plot``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROW = re.compile(r"^\| (?P<setting>[^|]+?) \| (?P<value>[^|]+?) \| \**(?P<acc>[\d.]+)\**"
                 r" \|[^|]*\|[^|]*\| (?P<think>[\d.]+) \|")


def read_table(path: Path) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        m = ROW.match(line)
        if m:
            curves[m["setting"].strip()].append((float(m["think"]), float(m["acc"])))
    return curves


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_table(HERE / "DEMO_RESULTS.md")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        points.sort()
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("mean thinking tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("s1-demo: budget forcing on 400 held-out questions (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = HERE / "demo_curve.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
