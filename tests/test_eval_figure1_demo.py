"""Figure 1 and the sequential-vs-parallel figure from one command on the demo model
(``evals/scripts/demo_figure1.sh``), small: 5 questions per panel against a real s1-serve
on the embedded demo model (about a minute on two CPU cores; the full 20-per-panel run
behind docs/figure1-demo.png takes about the same once the engine is up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]


def test_demo_figure1_in_one_command(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "fig"
    env = {**os.environ, "PY": sys.executable}
    subprocess.run(["bash", str(ROOT / "evals/scripts/demo_figure1.sh"), "5", str(out),
                    "18479"], cwd=ROOT, env=env, check=True, timeout=1800)
    assert Image.open(out / "figure1.png").size == (1440, 432)  # three panels
    for panel in ("short", "medium", "long"):
        report = json.loads((out / panel / "results.json").read_text())
        assert report["benchmark"]["name"] == panel and report["benchmark"]["questions"] == 5
        assert len(report["methods"]["thinking_max"]["points"]) == 4
        assert len(report["methods"]["waits"]["points"]) == 3
    short = json.loads((out / "short" / "results.json").read_text())
    assert short["methods"]["majority"]["points"]  # the parallel curve of the second figure
    assert (out / "short" / "scaling.png").is_file()
