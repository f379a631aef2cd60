#!/usr/bin/env bash
# The s1 recipe on one node of 8 H100 with torchrun (FSDP full shard, see
# training/configs/accelerate_fsdp_8xh100.yaml; 8 GPUs x batch 1 x accumulation 2 = 16).
#   bash training/scripts/train_8xh100.sh [extra s1-train flags, e.g. --output-dir runs/s1]
# Same run through accelerate instead of torchrun:
#   accelerate launch --config_file training/configs/accelerate_fsdp_8xh100.yaml \
#     -m training --config training/configs/s1_32b_8xh100.yaml
set -euo pipefail
cd "$(dirname "$0")/../.."
export TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
exec torchrun --standalone --nnodes 1 --nproc-per-node 8 -m training \
  --config training/configs/s1_32b_8xh100.yaml \
  --fsdp-config training/configs/accelerate_fsdp_8xh100.yaml \
  --resume-from-checkpoint latest "$@"
