#!/usr/bin/env bash
# The core install, measured: a fresh venv in a temporary folder with only `pip install .` from
# this checkout (no extras: API teachers only), then
#   - its size (du -sh) and the largest packages in it, and that no extra's module came with it;
#   - how long `synthkd --version` takes (median of 5 fresh processes);
#   - bench/startup.py with that venv's python: start to first request of a 2,000-row label run
#     against the fake OpenAI server (it needs nothing beyond the core install);
#   - that the one-line hint of a missing extra works from a checkout: `pip install --dry-run
#     'synthkd[report]'` is satisfied by the installed synthkd and lists only the extra's packages.
#
#   bash bench/core_install.sh            # PYTHON=python3.12 to pick the interpreter, KEEP=1 to keep the venv
#
# Needs network access to PyPI; takes a few minutes (litellm, datasets and pyarrow are the bulk).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synthkd-core.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
VENV="$WORK/venv"
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True

echo "== core install of $REPO into $VENV ($($PYTHON --version))"
"$PYTHON" -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
started=$(date +%s)
# Non-editable, from a copy of the checkout, so nothing is built inside the working tree.
mkdir "$WORK/src"
tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude=.ruff_cache -cf - . | tar -C "$WORK/src" -xf -
"$PY" -m pip install --quiet --no-cache-dir "$WORK/src"
echo "pip install . took $(($(date +%s) - started)) s"

echo "== size"
du -sh "$VENV"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "largest packages:"
du -s "$SITE"/* 2>/dev/null | sort -rn | head -12 | awk '{printf "  %6.0f MB  %s\n", $1 / 1024, $2}' | sed "s|$SITE/||"
# Every module an extra brings (synthkd.extras.EXTRAS) must be absent from the core install.
cd "$WORK"  # not the checkout: `import synthkd` must find the installed copy
"$PY" - <<'EOF'
import importlib.util

from synthkd.extras import EXTRAS

found = sorted({m for modules in EXTRAS.values() for m in modules if importlib.util.find_spec(m)})
print("modules of the extras present in the core install:", ", ".join(found) or "none")
if found:
    raise SystemExit(1)
EOF

echo "== synthkd --version (median of 5 fresh processes)"
"$PY" - "$VENV/bin/synthkd" <<'EOF'
import statistics
import subprocess
import sys
import time

times = []
for _ in range(5):
    started = time.perf_counter()
    out = subprocess.run([sys.argv[1], "--version"], check=True, capture_output=True, text=True).stdout
    times.append(time.perf_counter() - started)
print(f"{out.strip()}: {statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")
EOF

echo "== bench/startup.py (2,000 rows, openai backend, fake server)"
"$PY" "$REPO/bench/startup.py" --rows 2000 --repeat 3

echo "== the missing-extra hint from a checkout: pip install --dry-run 'synthkd[report]'"
"$PY" -m pip install --dry-run --no-cache-dir "synthkd[report]" 2>&1 | grep -E "already satisfied: synthkd|Would install" || true
