#!/usr/bin/env bash
# The recipe end to end on CPU in a few minutes: a tiny random Qwen2 and the synthetic
# letter-counting data, both built locally (no downloads). What CI runs besides the tests.
#   bash training/scripts/train_cpu_smoke.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${1:-.cache/train-smoke}
mkdir -p "$OUT"
"$PY" - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
from training.demo_data import build_splits, write_jsonl
from training.tiny import build_tiny_checkpoint
out = Path(sys.argv[1])
build_tiny_checkpoint(out / "base", "s1")
write_jsonl(build_splits(64, 8, 0)[0], out / "data" / "train.jsonl")
PYEOF
"$PY" -m training --model "$OUT/base" --data "$OUT/data" --output-dir "$OUT/model" \
  --block-size 1024 --global-batch-size 8 --per-device-batch-size 8 --learning-rate 3e-3 \
  --max-steps 24 --save-strategy steps --save-steps 12 --logging-steps 4 --no-progress-bar
echo "serve it: s1-serve --model $OUT/model"
