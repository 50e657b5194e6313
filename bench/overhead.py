"""A whole `synthkd run`'s cost outside its requests: fixed overhead, CPU per row, memory per row.

    python bench/overhead.py                                        # 2,000 rows, 100 ms, C = 64
    python bench/overhead.py --rows 200000 --latency-ms 5 --repeat 1 --no-throughput
    python bench/overhead.py --rows 20000 --latency-ms 5 --report none --profile /tmp/prof

Runs the real command (a fresh process, as a user would) on a load + label recipe with the openai
backend against the local fake server, with `output.report: none` and with the default report
(`--report` picks). The request cache is a fresh SYNTHKD_CACHE_DIR per run, so every row is sent.

- request span: the first request's arrival at the server to the last one's, plus one latency
  (the server's own log of arrivals; past its 100,000 kept arrivals, the last one is when the
  server's request count, polled, reached the total: within 20 ms).
- overhead = whole-process wall time - request span; split into "start" (process start to first
  request), "to outputs" (span end to manifest.json in the run folder: the label step's tail,
  provenance, the dataset, data.jsonl) and "finish" (then to exit: the card, the report, the
  interpreter's own exit).
- label tail: the label step's own time (manifest `steps[].seconds`) beyond the request span.
- CPU: user + sys of the synthkd process (os.wait4), per row; peak RSS (ru_maxrss).
- RSS growth: VmRSS of the process sampled every 0.2 s beside the server's request count; the
  least-squares slope per 10,000 rows over the samples past the first 10% of the rows, and the
  RSS at the end of the requests against that at 10% (the target: flat within 10%). One-off
  allocations inside that window count too: in a short run, the import of `datasets` (~110 MiB,
  made while the requests are out) dominates the slope.

Beside it (unless --no-throughput), bench/throughput.py's request-phase figure on the same server:
synthkd's dispatcher alone, in-process, for the same number of requests (requests/s, CPU ms each).
All times are on the machine's monotonic clock, the server's arrivals too. Timings on a shared
2-core machine are noisy: --repeat N shows the run with the median overhead of N (every run's
overhead is listed beside it). --profile writes a cProfile of each run (which slows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthkd.testing.fake_openai import MAX_ARRIVALS, FakeOpenAIServer

SAMPLE_SECONDS = 0.2  # RSS and the server's request count
POLL_SECONDS = 0.02  # the process's exit and the run folder's files
WARMUP_SHARE = 0.1  # RSS growth is fitted past this share of the rows (imports, buffers warming up)
REPORTS = {"none": ["none"], "basic": ["basic"], "both": ["none", "basic"]}


@dataclass
class Sample:
    when: float  # monotonic seconds
    rss_bytes: int
    requests: int  # chat requests the server has seen so far


@dataclass
class RunMeasurement:
    rows: int
    latency_s: float
    wall: float
    first_request: float  # seconds after the process started
    span: float
    span_exact: bool  # False: the last arrival is the polled moment the count reached the total
    outputs_written: float  # seconds after the process started: manifest.json in the run folder
    label_seconds: float  # the label step's own clock, from the manifest
    cpu: float
    peak_rss_bytes: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def overhead(self) -> float:
        return self.wall - self.span

    @property
    def span_end(self) -> float:
        return self.first_request + self.span

    @property
    def cpu_ms_per_row(self) -> float:
        return self.cpu / self.rows * 1000

    def rss_growth_per_10k(self) -> float | None:
        """Least-squares slope of RSS over rows requested, in bytes per 10,000 rows."""
        points = self._steady_samples()
        if len(points) < 3:
            return None
        xs = [float(s.requests) for s in points]
        ys = [float(s.rss_bytes) for s in points]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        if spread == 0:
            return None
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        return slope * 10_000

    def rss_end_over_start(self) -> float | None:
        """RSS when the last request was seen over RSS at the first sample past the warm-up."""
        points = self._steady_samples()
        if len(points) < 2:
            return None
        return points[-1].rss_bytes / points[0].rss_bytes

    def _steady_samples(self) -> list[Sample]:
        warm = self.rows * WARMUP_SHARE
        during = [s for s in self.samples if s.requests >= warm]
        # Up to the first sample that saw every request: after it the run is writing its outputs.
        done = next((i for i, s in enumerate(during) if s.requests >= self.rows), len(during) - 1)
        return during[: done + 1]


def write_recipe(folder: Path, rows: int, base_url: str, concurrency: int, report: str) -> Path:
    seeds = folder / "seeds.jsonl"
    with seeds.open("w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"instruction": f"Explain item {i}."}) + "\n")
    recipe = {
        "name": "overhead",
        "teacher": {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "base_url": base_url,
            "api_key_env": None,
            "concurrency": concurrency,
        },
        "steps": [{"step": "load", "path": str(seeds)}, {"step": "label"}],
        "output": {"dir": str(folder / "out"), "report": report},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def rss_of(pid: int) -> int | None:
    """The process's resident set in bytes (VmRSS), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def command(recipe: Path, profile: Path | None) -> list[str]:
    run = ["-m", "synthkd.cli", "run", str(recipe)]
    if profile is None:
        return [sys.executable, *run]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), *run]


def child_env(cache_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SYNTHKD_CACHE_DIR": str(cache_dir),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


class Watch:
    """Waits for the synthkd process, sampling its RSS and the server's count as it goes."""

    def __init__(self, server: FakeOpenAIServer, pid: int, rows: int, manifest: Path) -> None:
        self.server, self.pid, self.rows, self.manifest = server, pid, rows, manifest
        self.samples: list[Sample] = []
        self.outputs_at: float | None = None
        self.all_seen_at: float | None = None  # when the polled count first reached `rows`
        self._next_sample = 0.0

    def until_exit(self) -> tuple[int, os.struct_rusage]:
        """(exit status, resource usage) of the process, sampling until it exits."""
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                return status, usage
            self._poll(time.monotonic())
            time.sleep(POLL_SECONDS)

    def _poll(self, now: float) -> None:
        if self.outputs_at is None and self.manifest.exists():
            self.outputs_at = now
        seen = self.samples[-1].requests if self.samples else 0
        # Near the end the count is polled every time, so the last arrival is known within 20 ms.
        if now < self._next_sample and (seen < self.rows * 0.98 or self.all_seen_at is not None):
            return
        self._next_sample = now + SAMPLE_SECONDS
        requests = self.server.stats()["requests"]
        rss = rss_of(self.pid)
        if rss is not None:
            self.samples.append(Sample(now, rss, requests))
        if requests >= self.rows and self.all_seen_at is None:
            self.all_seen_at = now


def one_run(
    server: FakeOpenAIServer,
    folder: Path,
    args: argparse.Namespace,
    report: str,
    profile: Path | None,
) -> RunMeasurement:
    recipe = write_recipe(folder, args.rows, server.base_url, args.concurrency, report)
    server.reset()
    started = time.monotonic()
    process = subprocess.Popen(
        command(recipe, profile),
        env=child_env(folder / "cache"),
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if args.show_errors else subprocess.DEVNULL,
    )
    watch = Watch(server, process.pid, args.rows, folder / "out" / "manifest.json")
    status, usage = watch.until_exit()
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        errors = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"synthkd run failed with exit code {process.returncode}\n{errors}")
    first, last, exact = arrival_bounds(server, watch, args.rows)
    latency = args.latency_ms / 1000
    manifest = json.loads((folder / "out" / "manifest.json").read_text())
    label = next(step for step in manifest["steps"] if step["step"] == "label")
    return RunMeasurement(
        rows=args.rows,
        latency_s=latency,
        wall=wall,
        first_request=first - started,
        span=last - first + latency,
        span_exact=exact,
        outputs_written=(watch.outputs_at or time.monotonic()) - started,
        label_seconds=label["seconds"],
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        samples=watch.samples,
    )


def arrival_bounds(server: FakeOpenAIServer, watch: Watch, rows: int) -> tuple[float, float, bool]:
    """(first arrival, last arrival, whether the last is the server's own record)."""
    arrivals = server.arrivals()
    requests = server.stats()["requests"]
    if requests != rows:
        raise SystemExit(f"the server saw {requests} requests for {rows} rows: retries or cache hits")
    if requests <= MAX_ARRIVALS:
        return arrivals[0][0], arrivals[-1][0], True
    assert watch.all_seen_at is not None
    return arrivals[0][0], watch.all_seen_at, False


def throughput_figure(base_url: str, rows: int, concurrency: int) -> tuple[float, float]:
    """bench/throughput.py's synthkd measurement: (requests/s, client CPU ms per request)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import run_synthkd  # imports openai (0.65 s): only when asked for

    with tempfile.TemporaryDirectory() as scratch:
        measured = asyncio.run(run_synthkd(base_url, rows, concurrency, None, Path(scratch)))
    return measured.rate, measured.cpu_seconds / measured.requests * 1000


def median_run(runs: list[RunMeasurement]) -> RunMeasurement:
    """The run with the median overhead (its other figures go with it, consistent)."""
    return sorted(runs, key=lambda run: run.overhead)[(len(runs) - 1) // 2]


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def table_row(report: str, runs: list[RunMeasurement]) -> str:
    run = median_run(runs)
    growth = run.rss_growth_per_10k()
    ratio = run.rss_end_over_start()
    cells = [
        report,
        f"{run.wall:.2f}",
        f"{run.span:.2f}" + ("" if run.span_exact else "~"),
        f"{run.overhead:.2f}",
        f"{run.first_request:.2f}",
        f"{run.outputs_written - run.span_end:.2f}",
        f"{run.wall - run.outputs_written:.2f}",
        f"{run.label_seconds - run.span:.2f}",
        f"{run.cpu:.1f}",
        f"{run.cpu_ms_per_row:.2f}",
        mib(run.peak_rss_bytes),
        "-" if growth is None else f"{growth / 2**20:+.1f}",
        "-" if ratio is None else f"{ratio:.2f}",
        f"{run.rows / run.wall:.0f}",
    ]
    overheads = ", ".join(f"{r.overhead:.2f}" for r in runs)
    return "| " + " | ".join(cells) + f" |  overheads: {overheads}"


HEADER = (
    "| report | wall s | span s | overhead s | start s | to outputs s | finish s | label tail s "
    "| CPU s | CPU ms/row | peak RSS MiB | RSS MiB/10k rows | RSS end/10% | rows/s end to end |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--report", choices=sorted(REPORTS), default="both", help="output.report of the runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per report setting; the median is shown")
    parser.add_argument("--no-throughput", action="store_true", help="skip bench/throughput.py's figure")
    parser.add_argument(
        "--profile", type=Path, help="folder for a cProfile of each run (<report>-<i>.prof); slows them"
    )
    parser.add_argument("--show-errors", action="store_true", help="print the run's stderr if it fails")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[RunMeasurement]] = {}
    with FakeOpenAIServer(latency_ms=args.latency_ms) as server:
        for report in REPORTS[args.report]:
            for index in range(args.repeat):
                profile = args.profile / f"{report}-{index}.prof" if args.profile else None
                with tempfile.TemporaryDirectory() as folder:
                    measured = one_run(server, Path(folder), args, report, profile)
                results.setdefault(report, []).append(measured)
        throughput = None
        if not args.no_throughput:
            server.reset()
            throughput = throughput_figure(server.base_url, args.rows, args.concurrency)
    limit = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else float("inf")
    print(
        f"`synthkd run` (load + label, openai backend) in a fresh process: {args.rows} rows, "
        f"{args.latency_ms:g} ms latency, concurrency {args.concurrency}, median of {args.repeat} "
        f"run(s){' under cProfile' if args.profile else ''}; Python {sys.version.split()[0]}\n"
    )
    print(HEADER)
    for report, runs in results.items():
        print(table_row(report, runs))
    print("\n~: the last arrival as polled, not the server's record. RSS growth: fit past 10% of the rows.")
    first = median_run(next(iter(results.values())))
    print(
        f"request phase of the run: {first.rows / first.span:.0f} requests/s "
        f"(limit C/L {limit:.0f}); whole run: {first.rows / first.wall:.0f} rows/s"
    )
    if throughput is not None:
        rate, cpu_ms = throughput
        print(
            f"bench/throughput.py's figure (dispatcher alone, in-process, {args.rows} requests): "
            f"{rate:.0f} requests/s, client CPU {cpu_ms:.2f} ms/request"
        )


if __name__ == "__main__":
    main()
