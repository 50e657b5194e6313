#!/usr/bin/env bash
# SFT and KD of SmolLM2-135M (the embedded model) in bf16 on a generated dataset; prints tokens/s,
# peak memory and MFU. On a machine without a GPU, pass --small for a quick check on a tiny model:
#   bash bench/gpu_train.sh            # on a GPU
#   bash bench/gpu_train.sh --small    # on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/gpu_train.py "$@"
