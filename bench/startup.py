"""Time from `synthkd run` starting to its first request, and to its dataset written.

    python bench/startup.py [--rows 2000] [--repeat 3]

Runs the real command (a fresh process, as a user would) on a load + label recipe with the openai
backend against the local fake server (10 ms latency, concurrency 64), and reads when the first
request arrived from the server's own log. Both clocks are the machine's monotonic clock. "dataset
written" is when data.jsonl appears; the command then goes on to write the card and the report.

It needs only the core install (`pip install .`: no extra, no test tools; uvloop is used by the
fake server when present): bench/core_install.sh runs it in a fresh core venv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from synthkd.testing.fake_openai import FakeOpenAIServer


def one_run(server: FakeOpenAIServer, folder: Path, rows: int) -> tuple[float, float]:
    """(seconds to the first request, seconds to data.jsonl) for one fresh `synthkd run`."""
    seeds = folder / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Explain item {i}."}) + "\n" for i in range(rows)))
    recipe = {
        "name": "startup",
        "teacher": {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.base_url,
            "api_key_env": None,
            "concurrency": 64,
        },
        "steps": [{"step": "load", "path": str(seeds)}, {"step": "label"}],
        "output": {"dir": str(folder / "out")},
    }
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ,
        "SYNTHKD_CACHE_DIR": str(folder / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    server.reset()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "synthkd.cli", "run", str(path)],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    written = None
    while process.poll() is None:
        if written is None and (folder / "out" / "data.jsonl").exists():
            written = time.monotonic() - started
        time.sleep(0.01)
    if process.returncode != 0:
        raise SystemExit(f"synthkd run failed with exit code {process.returncode}")
    first = server.arrivals()[0][0] - started
    return first, written if written is not None else time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    firsts, writes = [], []
    with FakeOpenAIServer(latency_ms=10) as server:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as folder:
                first, written = one_run(server, Path(folder), args.rows)
            firsts.append(first)
            writes.append(written)
    print(f"{args.rows} rows, openai backend, concurrency 64, median of {args.repeat} fresh processes")
    print(f"start -> first request sent: {statistics.median(firsts):.2f} s   (runs: {firsts})")
    print(f"start -> dataset written:    {statistics.median(writes):.2f} s   (runs: {writes})")


if __name__ == "__main__":
    main()
