#!/usr/bin/env bash
# Sequential (budget forcing) vs parallel (majority vote) scaling on the demo model, against
# the real server: writes the held-out demo questions as a benchmark, starts s1-serve on the
# demo model (server/demo_model, what `make serve` serves), runs s1-eval, stops the server.
#   evals/scripts/demo_parallel_vs_sequential.sh [N_QUESTIONS] [OUT_DIR] [PORT]
set -euo pipefail
N=${1:-200}
OUT=${2:-runs/demo-parallel}
PORT=${3:-18473}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" - "$N" "$OUT/demo_eval.jsonl" <<'PYEOF'
import json, sys
from training.demo_data import build_splits
n, path = int(sys.argv[1]), sys.argv[2]
_, rows = build_splits(0, n, 0)  # the held-out split of training/demo_eval.py
with open(path, "w") as fh:
    for i, r in enumerate(rows):
        fh.write(json.dumps({"id": f"demo-{i}", "question": r.question,
                             "answer": str(json.loads(r.metadata)["count"])}) + "\n")
PYEOF
"$PY" -m server --port "$PORT" --api-keys demo-key > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
# the CPU engine takes 1-6 minutes to start on a busy 2-core machine; wait up to 15
for _ in $(seq 1 900); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "server exited; see $OUT/server.log" >&2; exit 2; }
  sleep 1
done
"$PY" -m evals.cli --data "$OUT/demo_eval.jsonl" --base-url "http://127.0.0.1:$PORT" \
  --api-key demo-key --thinking-max 0,8,16,24,32 --waits 2 --samples 8 \
  --sample-temperature 0.7 --seed 0 --max-tokens 600 --concurrency 32 --no-progress \
  --out "$OUT"
