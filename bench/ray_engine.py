"""The local engine against `engine: ray` on one machine: the whole `synthkd run` of a load + label
+ dedup + filter recipe against the local fake OpenAI server, each engine from a fresh cache.

    python bench/ray_engine.py                         # 2,000 rows, 100 ms latency, C = 64
    python bench/ray_engine.py --rows 20000 --latency-ms 50 --shard-rows 2000

Each run is the real command in a fresh process, as a user would start it; `--engine ray` starts
a local Ray cluster (this machine's CPUs) and stops it at exit. Printed for each: wall time, the
row-wise steps' own time (manifest), rows/s, shards and actors. On one machine Ray brings no
speed to an API teacher (the local engine already keeps C requests in flight from one event
loop); what it costs here is its start-up and the shards' tails. Its use is more than one
machine, or a GPU per actor for a local model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from synthkd.testing.fake_openai import FakeOpenAIServer


def recipe(folder: Path, base_url: str, rows: int, concurrency: int, shard_rows: int) -> Path:
    seeds = folder / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Describe item {i}."}) + "\n" for i in range(rows)))
    path = folder / "bench.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "ray-bench",
                "teacher": {
                    "backend": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": base_url,
                    "api_key_env": None,
                    "concurrency": concurrency,
                },
                "steps": [
                    {"step": "load", "path": str(seeds)},
                    {"step": "label"},
                    {"step": "dedup", "method": "exact", "columns": ["response"]},
                    {"step": "filter", "drop_regex": "item 1\\d\\b"},
                ],
                "output": {"report": "none"},
                "engine": {"shard_rows": shard_rows},
            },
            sort_keys=False,
        )
    )
    return path


def run(path: Path, folder: Path, engine: str) -> dict:
    environment = {
        **os.environ,
        "SYNTHKD_CACHE_DIR": str(folder / f"cache-{engine}"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    out = folder / f"out-{engine}"
    command = [
        sys.executable,
        "-m",
        "synthkd.cli",
        "run",
        str(path),
        "--engine",
        engine,
        "--output",
        str(out),
    ]
    clock = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - clock
    if done.returncode:
        raise SystemExit(f"{engine}: exit {done.returncode}\n{done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    label = manifest["steps"][1]
    return {
        "wall": wall,
        "label_seconds": label["seconds"],
        "rows_in": label["rows_in"],
        "rows_out": manifest["rows"],
        "engine": manifest.get("engine", []),
        "data": (out / "data.jsonl").read_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--shard-rows", type=int, default=1000)
    args = parser.parse_args()
    with FakeOpenAIServer(latency_ms=args.latency_ms) as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = recipe(folder, server.base_url, args.rows, args.concurrency, args.shard_rows)
        results = {engine: run(path, folder, engine) for engine in ("local", "ray")}
    floor = args.rows * args.latency_ms / 1000 / args.concurrency
    print(
        f"{args.rows} rows, {args.latency_ms:g} ms latency, C = {args.concurrency}, "
        f"shards of {args.shard_rows}; C/L floor of the label step {floor:.1f} s"
    )
    print(f"{'engine':<7}{'wall s':>9}{'label s':>9}{'label rows/s':>14}{'rows out':>10}  shards x actors")
    for engine, result in results.items():
        shards = ", ".join(f"{e['shards']} x {e['workers']}" for e in result["engine"]) or "-"
        rate = result["rows_in"] / result["label_seconds"]
        print(
            f"{engine:<7}{result['wall']:>9.2f}{result['label_seconds']:>9.2f}{rate:>14.0f}"
            f"{result['rows_out']:>10}  {shards}"
        )
    same = results["local"]["data"] == results["ray"]["data"]
    print(f"same data.jsonl from both engines: {same}")


if __name__ == "__main__":
    main()
