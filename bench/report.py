"""Time and size of report.html, basic and full (with the instruction map), for a 2,000-row run.

    python bench/report.py [--rows 2000] [--repeat 3]

The run folder is written as the pipeline writes one (`output.write_run`), with the rows of
tests/test_report.py's realistic run: label, embedding dedup, quality and judge steps, answers of
about 250 words with a long tail past 2,000. Each report is the real command (`synthkd report`, a
fresh process, as after a run), timed from start to exit. The full report is timed with an empty
embeddings cache first, then with the instructions' embeddings cached (as after a dedup step with
the same encoder); the map samples 2,000 rows at most (`report.MAP_MAX_ROWS`).

Needs the `report` and `curate` extras (the map's encoder) and the test tools (the row generator).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def timed_report(run_dir: Path, out: Path, cache: Path, with_map: bool) -> float:
    """Seconds for one `synthkd report` process; the report lands at `out`."""
    command = [sys.executable, "-m", "synthkd.cli", "report", str(run_dir), "--output", str(out)]
    env = {**os.environ, **OFFLINE, "SYNTHKD_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run(command + (["--map"] if with_map else []), env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the basic report (median kept)")
    args = parser.parse_args()

    from test_report import write_realistic_run

    with tempfile.TemporaryDirectory(prefix="synthkd-bench-report-") as temp:
        folder = Path(temp)
        run_dir = write_realistic_run(folder / "run", rows=args.rows)
        data_mb = (run_dir / "data.jsonl").stat().st_size / 1e6
        print(f"{args.rows:,} rows (data.jsonl {data_mb:.1f} MB), `synthkd report` wall time and size:")
        basic = folder / "basic.html"
        seconds = statistics.median(
            timed_report(run_dir, basic, folder / "cache", with_map=False) for _ in range(args.repeat)
        )
        rows = [("basic", seconds, basic)]
        full = folder / "full.html"
        cold = timed_report(run_dir, full, folder / "cache", with_map=True)
        rows.append(("full, embeddings not cached", cold, full))
        warm = timed_report(run_dir, full, folder / "cache", with_map=True)
        rows.append(("full, embeddings cached", warm, full))
        print(f"| {'report':<28} | {'seconds':>7} | {'size':>8} |")
        print(f"|{'-' * 30}|{'-' * 8}:|{'-' * 9}:|")
        for name, took, path in rows:
            print(f"| {name:<28} | {took:7.1f} | {path.stat().st_size / 1e6:5.2f} MB |")


if __name__ == "__main__":
    main()
