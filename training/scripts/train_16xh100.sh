#!/usr/bin/env bash
# The s1 recipe on 2 nodes x 8 H100 with torchrun; run this on each node.
# 16 GPUs x batch 1 x accumulation 1 = global batch 16 (the paper's setup).
#   MASTER_ADDR=node0 NODE_RANK=0 bash training/scripts/train_16xh100.sh   # on node 0
#   MASTER_ADDR=node0 NODE_RANK=1 bash training/scripts/train_16xh100.sh   # on node 1
# Under Slurm use training/scripts/train_16xh100.slurm instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
: "${NODE_RANK:?set NODE_RANK to 0 or 1}"
export TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
exec torchrun --nnodes 2 --node-rank "$NODE_RANK" --nproc-per-node 8 \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" -m training \
  --config training/configs/s1_32b_16xh100.yaml \
  --fsdp-config training/configs/accelerate_fsdp_16xh100.yaml \
  --resume-from-checkpoint latest "$@"
