#!/usr/bin/env bash
# Figure 1 (three panels) and the sequential-vs-parallel figure on the demo model, in one
# command: writes three held-out demo benchmarks (letter counting in short, medium and long
# words: the demo model's stand-ins for the paper's three benchmarks), starts s1-serve on the
# demo model once, runs s1-eval on each (budget forcing maxima and Waits 0..2; the first panel
# also with 8 samples for majority voting), stops the server and draws
#   OUT/figure1.png                    three panels, accuracy vs average thinking tokens
#   OUT/short/scaling.png              sequential (budget forcing) vs parallel (majority)
#   evals/scripts/demo_figure1.sh [N_PER_PANEL] [OUT_DIR] [PORT]
set -euo pipefail
N=${1:-60}
OUT=${2:-runs/demo-figure1}
PORT=${3:-18474}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" - "$N" "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
from training.demo_data import build_splits
n, out = int(sys.argv[1]), Path(sys.argv[2])
_, rows = build_splits(0, 20 * n, 0)  # the held-out split of training/demo_eval.py
panels = {"short": [], "medium": [], "long": []}
for r in rows:
    word = r.question.rstrip("?").split()[-1]
    panel = "short" if len(word) <= 6 else "medium" if len(word) <= 9 else "long"
    if len(panels[panel]) < n:
        panels[panel].append(r)
for name, items in panels.items():
    (out / name).mkdir(parents=True, exist_ok=True)
    with open(out / name / f"{name}.jsonl", "w") as fh:
        for i, r in enumerate(items):
            fh.write(json.dumps({"id": f"{name}-{i}", "question": r.question,
                                 "answer": str(json.loads(r.metadata)["count"])}) + "\n")
PYEOF
"$PY" -m server --port "$PORT" --api-keys demo-key > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 900); do  # the CPU engine can take minutes to start on a busy machine
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "server exited; see $OUT/server.log" >&2; exit 2; }
  sleep 1
done
for panel in short medium long; do
  extra=()
  [ "$panel" = short ] && extra=(--samples 8 --sample-temperature 0.7)
  "$PY" -m evals.cli --data "$OUT/$panel/$panel.jsonl" --base-url "http://127.0.0.1:$PORT" \
    --api-key demo-key --thinking-max 0,8,16,32 --waits 2 "${extra[@]}" --seed 0 \
    --max-tokens 600 --concurrency 32 --no-progress --out "$OUT/$panel"
done
"$PY" -m evals.figure1 "$OUT/short/results.json" "$OUT/medium/results.json" \
  "$OUT/long/results.json" --titles "short words,medium words,long words" \
  --out "$OUT/figure1.png"
