"""The real `synthkd run` against the fake OpenAI-compatible server, through a matrix of faults.

    python bench/faults.py [--rows 300] [--only hang,kill] [--quick]

Each scenario gets a fresh temporary folder: its own SYNTHKD_CACHE_DIR, an empty output folder, N
seed rows `{"instruction": "Explain item {i}."}`, and a recipe that loads them and labels them with
the openai backend at the fake server (concurrency 16, timeout 2 s). `python -m synthkd.cli run
recipe.yaml` runs as a subprocess, once or several times, while the faults are injected. One row
per scenario:

- rows lost: input rows in neither data.jsonl nor failures.jsonl of the final successful run(s);
  must be 0.
- rows duplicated: rows of data.jsonl whose id or instruction an earlier row already has; must be 0.
- paid requests repeated: the server's 200 answers over every run of the scenario (truncated bodies
  left out: nothing usable was delivered) minus the distinct prompts answered (rows in data.jsonl
  plus content_filter failures); at most the concurrency when a run was interrupted, 0 otherwise.
  For runs sharing one cache from separate processes it is reported, with no target.
- exit codes of the runs in order, each with its seconds (runs started together joined by `/`; a
  signal by its name), and the scenario's seconds, with the report written after each run.

The exit code is 1 when any scenario misses a target; the tail of its runs' output goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import synthkd
from synthkd.testing.fake_openai import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 16
TIMEOUT_S = 2
GONE_OUTAGE_S = 10  # teacher.outage_seconds of the "server gone" runs
RUN_LIMIT_S = 600  # a run still going after this long is killed and counted as a missed target
POLL_S = 0.02
RECIPE = """\
name: faults
teacher:
  backend: openai
  model: fake-model
  base_url: {base_url}
  api_key_env: null
  concurrency: {concurrency}
  timeout: {timeout}
steps:
  - step: load
    path: seeds.jsonl
  - step: label
output:
  dir: out
"""


def paid_answers(stats: dict[str, Any]) -> int:
    """200 answers with a usable body: a truncated (malformed) body is sent with status 200 too."""
    return stats["by_status"].get("200", 0) - stats["by_fault"].get("malformed", 0)


class Teacher:
    """The fake server on one port, stopped and started again there at will; counts the paid
    answers of all its lives."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.port = 0  # the first start picks a free one
        self.server: FakeOpenAIServer | None = None
        self.paid_before = 0  # paid answers of the servers already stopped
        self.base_url = ""
        self.start()

    def start(self) -> None:
        server = FakeOpenAIServer(port=self.port, **self.settings)
        server.__enter__()
        self.server, self.base_url = server, server.base_url
        self.port = int(re.search(r":(\d+)/", server.base_url).group(1))

    def paid(self) -> int:
        return self.paid_before + (paid_answers(self.server.stats()) if self.server else 0)

    def stop(self) -> None:
        """Hold every new request (a hang) until the ones being answered are done, so the count of
        answers is final, then stop the process: held requests see their connection dropped."""
        if self.server is None:
            return
        self.server.configure(hang=1.0, hang_seconds=3600)
        time.sleep(self.settings.get("latency_ms", 0) / 1000 + 0.3)
        self.paid_before = self.paid()
        self.server.close()
        self.server = None


@dataclass
class Run:
    code: int | None  # None: still running after RUN_LIMIT_S, then killed
    output: str
    seconds: float
    out_dir: Path


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    started: float
    log: Path
    out_dir: Path


class Workspace:
    """One scenario's folder: seeds, recipe, cache and output folders; runs `synthkd run` there."""

    def __init__(self, root: Path, rows: int, base_url: str) -> None:
        self.root = root
        with (root / "seeds.jsonl").open("w") as handle:
            for index in range(rows):
                handle.write(json.dumps({"instruction": instruction(index)}) + "\n")
        recipe = RECIPE.format(base_url=base_url, concurrency=CONCURRENCY, timeout=TIMEOUT_S)
        (root / "recipe.yaml").write_text(recipe)
        path = os.environ.get("PYTHONPATH")
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO) if not path else os.pathsep.join([str(REPO), path]),
            "SYNTHKD_CACHE_DIR": str(root / "cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.launched: list[Launched] = []

    def launch(self, *extra: str, out: str = "out") -> Launched:
        log = self.root / f"run-{len(self.launched)}.log"
        command = [sys.executable, "-m", "synthkd.cli", "run", "recipe.yaml", "--output", out, *extra]
        with log.open("wb") as handle:
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a signal meant for this bench does not reach the runs
            )
        launched = Launched(process, time.monotonic(), log, self.root / out)
        self.launched.append(launched)
        return launched

    def finish(self, launched: Launched) -> Run:
        return self.finish_all([launched])[0]

    def finish_all(self, launched: list[Launched]) -> list[Run]:
        """Wait for runs started together, each timed to its own exit."""
        ended: dict[int, tuple[int | None, float]] = {}
        while len(ended) < len(launched):
            for index, one in enumerate(launched):
                if index in ended:
                    continue
                code = one.process.poll()
                now = time.monotonic()
                if code is None and now > one.started + RUN_LIMIT_S:
                    one.process.kill()
                    one.process.wait()
                    ended[index] = (None, now - one.started)
                elif code is not None:
                    ended[index] = (code, now - one.started)
            time.sleep(POLL_S)
        return [
            Run(ended[i][0], one.log.read_text(errors="replace"), ended[i][1], one.out_dir)
            for i, one in enumerate(launched)
        ]

    def run(self, *extra: str) -> Run:
        return self.finish(self.launch(*extra))

    def close(self) -> None:
        for launched in self.launched:
            if launched.process.poll() is None:
                launched.process.kill()
                launched.process.wait()


def instruction(index: int) -> str:
    return f"Explain item {index}."


@dataclass
class Played:
    """What a scenario did: its runs (those started together share an inner list), the output
    folders of its final successful runs, the limit on repeated paid requests (None: no target)
    and the targets it missed."""

    runs: list[list[Run]] = field(default_factory=list)
    finals: list[Path] = field(default_factory=list)
    repeated_limit: int | None = 0
    all_rows: bool = False  # every row must come out (no failures either)
    missed: list[str] = field(default_factory=list)

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            self.missed.append(what)

    def add(self, *runs: Run) -> None:
        self.runs.append(list(runs))


Play = Callable[[Workspace, Teacher, int, Played], None]


def wait_for_answers(teacher: Teacher, count: int, launched: Launched) -> bool:
    """Wait until the server has answered `count` requests; False if the run ended first."""
    deadline = launched.started + RUN_LIMIT_S
    while launched.process.poll() is None and time.monotonic() < deadline:
        if teacher.paid() >= count:
            return True
        time.sleep(POLL_S)
    return False


def play_once(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
    run = ws.run()
    played.add(run)
    played.expect(run.code == 0, f"exit {run.code}, expected 0")
    played.finals.append(run.out_dir)


def play_outage(seconds: float) -> Play:
    def play(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
        played.all_rows = True
        launched = ws.launch()
        if wait_for_answers(teacher, rows // 3, launched):
            teacher.stop()
            time.sleep(seconds)
            teacher.start()
        else:
            played.missed.append("the run ended before a third of the rows were answered")
        run = ws.finish(launched)
        played.add(run)
        played.expect(run.code == 0, f"exit {run.code}, expected 0")
        played.finals.append(run.out_dir)

    return play


def play_server_gone(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
    played.all_rows, played.repeated_limit = True, CONCURRENCY
    patience = f"teacher.outage_seconds={GONE_OUTAGE_S}"
    launched = ws.launch("--set", patience)
    if wait_for_answers(teacher, rows // 3, launched):
        teacher.stop()
    else:
        played.missed.append("the run ended before a third of the rows were answered")
    first = ws.finish(launched)
    said = "no connection to the teacher" in " ".join(first.output.split())
    played.expect(first.code == 1 and said, f'first run: exit {first.code}, expected 1 "no connection"')
    if teacher.server is None:
        teacher.start()
    second = ws.run("--set", patience)
    played.add(first)
    played.add(second)
    played.expect(second.code == 0, f"rerun: exit {second.code}, expected 0")
    played.finals.append(second.out_dir)


def play_interrupt(signum: int, expected_code: int | None) -> Play:
    def play(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
        played.all_rows, played.repeated_limit = True, CONCURRENCY
        launched = ws.launch()
        if wait_for_answers(teacher, rows // 3, launched):
            launched.process.send_signal(signum)
        else:
            played.missed.append("the run ended before a third of the rows were answered")
        first = ws.finish(launched)
        second = ws.run()
        played.add(first)
        played.add(second)
        if expected_code is not None:
            played.expect(
                first.code == expected_code, f"first run: exit {first.code}, expected {expected_code}"
            )
        played.expect(first.code != 0, "the interrupted run exited 0")
        played.expect(second.code == 0, f"rerun: exit {second.code}, expected 0")
        played.finals.append(second.out_dir)

    return play


REFUSED = re.compile(r"another synthkd run \(pid \d+\) is writing")


def play_same_output(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
    played.all_rows = True
    runs = ws.finish_all([ws.launch() for _ in range(3)])
    played.add(*runs)
    done = [run for run in runs if run.code == 0]
    refused = [run for run in runs if run.code == 1 and REFUSED.search(" ".join(run.output.split()))]
    played.expect(
        len(done) == 1 and len(refused) == 2,
        f"exits {'/'.join(map(str, (r.code for r in runs)))}: expected one 0 and two refusals",
    )
    if len(done) == 1:
        played.finals.append(done[0].out_dir)
        slow = [f"{run.seconds:.0f} s" for run in refused if run.seconds >= done[0].seconds]
        played.expect(not slow, f"refused only after {', '.join(slow)}, not at once")


def play_shared_cache(ws: Workspace, teacher: Teacher, rows: int, played: Played) -> None:
    played.all_rows, played.repeated_limit = True, None
    runs = ws.finish_all([ws.launch(out=f"out-{k}") for k in "abc"])
    played.add(*runs)
    for run in runs:
        played.expect(run.code == 0, f"{run.out_dir.name}: exit {run.code}, expected 0")
        if run.code == 0:
            played.finals.append(run.out_dir)


@dataclass
class Scenario:
    key: str  # for --only
    name: str
    server: dict[str, Any]
    play: Play


def scenarios(quick: bool) -> list[Scenario]:
    outage = 10 if quick else 60
    return [
        Scenario("hang", "hang 10% (30 s; timeout 2 s)", {"hang": 0.1, "hang_seconds": 30}, play_once),
        Scenario("malformed", "malformed body 10%", {"malformed": 0.1}, play_once),
        Scenario("content-filter", "content filter 10%", {"content_filter": 0.1}, play_once),
        Scenario("429", "429 storm 50%, Retry-After 0.2 s", {"fail_429": 0.5, "retry_after": 0.2}, play_once),
        Scenario(
            "outage",
            f"outage {outage} s at 1/3, same port" + (" (--quick; full: 60 s)" if quick else ""),
            {"latency_ms": 50},
            play_outage(outage),
        ),
        Scenario(
            "server-gone",
            f"server gone at 1/3 (outage_seconds {GONE_OUTAGE_S}); restart, rerun",
            {"latency_ms": 50},
            play_server_gone,
        ),
        Scenario("kill", "kill -9 at 1/3; rerun", {"latency_ms": 50}, play_interrupt(signal.SIGKILL, -9)),
        Scenario("sigint", "SIGINT at 1/3; rerun", {"latency_ms": 50}, play_interrupt(signal.SIGINT, 130)),
        Scenario(
            "sigterm", "SIGTERM at 1/3; rerun", {"latency_ms": 50}, play_interrupt(signal.SIGTERM, None)
        ),
        Scenario("same-output", "3 runs at once, same output", {"latency_ms": 50}, play_same_output),
        Scenario(
            "shared-cache",
            "3 runs at once, same cache, own outputs (latency 500 ms: the runs overlap)",
            {"latency_ms": 500},
            play_shared_cache,
        ),
    ]


@dataclass
class Inspection:
    rows_out: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # reason -> rows
    lost: int = 0
    duplicated: int = 0
    answered: set[str] = field(default_factory=set)  # instructions the teacher answered


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def inspect(out_dir: Path, rows: int) -> Inspection:
    data = read_jsonl(out_dir / "data.jsonl")
    failures = read_jsonl(out_dir / "failures.jsonl")
    found = Inspection(rows_out=len(data), failures=Counter(f["reason"] for f in failures))
    ids: set[str] = set()
    texts: set[str] = set()
    for row in data:
        if row.get("id") in ids or row.get("instruction") in texts:
            found.duplicated += 1
        ids.add(row.get("id"))
        texts.add(row.get("instruction"))
    failed = {(f.get("row") or {}).get("instruction") for f in failures}
    found.lost = sum(1 for i in range(rows) if instruction(i) not in texts | failed)
    content_filtered = {
        (f.get("row") or {}).get("instruction") for f in failures if f["reason"] == "content_filter"
    }
    found.answered = (texts | content_filtered) - {None}
    return found


@dataclass
class Result:
    name: str
    cells: list[str]
    missed: list[str]
    logs: list[str]


def measure(scenario: Scenario, rows: int) -> Result:
    clock = time.monotonic()
    played = Played()
    with tempfile.TemporaryDirectory(prefix="synthkd-faults-") as scratch:
        teacher = Teacher(scenario.server)
        ws = Workspace(Path(scratch), rows, teacher.base_url)
        try:
            scenario.play(ws, teacher, rows, played)
            paid = teacher.paid()
        finally:
            ws.close()
            teacher.stop()
        seconds = time.monotonic() - clock
        finals = [inspect(out_dir, rows) for out_dir in played.finals]
    if not finals:  # no run succeeded: nothing of the input came out
        finals = [Inspection(lost=rows)]
    lost = sum(f.lost for f in finals)
    duplicated = sum(f.duplicated for f in finals)
    answered: set[str] = set().union(*(f.answered for f in finals))
    repeated = paid - len(answered)
    played.expect(lost == 0, f"{lost} rows lost")
    played.expect(duplicated == 0, f"{duplicated} rows duplicated")
    limit = played.repeated_limit
    if limit is not None:
        played.expect(repeated <= limit, f"{repeated} paid requests repeated, limit {limit}")
    if played.all_rows:
        short = [f"{f.rows_out}" for f in finals if f.rows_out != rows]
        played.expect(not short, f"rows out {', '.join(short)}, expected {rows}")
    failures = Counter[str]()
    for f in finals:
        failures.update(f.failures)
    cells = [
        scenario.name,
        str(rows),
        " / ".join(str(f.rows_out) for f in finals),
        f"{sum(failures.values())}"
        + (
            f" ({', '.join(f'{reason} {count}' for reason, count in failures.most_common())})"
            if failures
            else ""
        ),
        str(lost),
        str(duplicated),
        f"{repeated} ({'reported' if limit is None else f'<= {limit}'})",
        ", ".join(
            "/".join(f"{exit_text(run.code)} ({run.seconds:.0f} s)" for run in group) for group in played.runs
        ),
        f"{seconds:.0f}",
        "met" if not played.missed else "MISSED: " + "; ".join(played.missed),
    ]
    logs = [run.output for group in played.runs for run in group]
    return Result(scenario.name, cells, played.missed, logs)


def exit_text(code: int | None) -> str:
    if code is None:
        return f"killed after {RUN_LIMIT_S} s"
    if code < 0:
        return signal.Signals(-code).name
    return str(code)


HEADER = [
    "scenario",
    "rows in",
    "rows out",
    "failures written",
    "rows lost",
    "rows duplicated",
    "paid requests repeated",
    "exit codes (seconds)",
    "seconds",
    "target",
]


def markdown(results: list[Result]) -> str:
    align = ["---", "---:", "---:", "---", "---:", "---:", "---:", "---", "---:", "---"]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(result.cells) + " |" for result in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300, help="seed rows per run (default 300)")
    parser.add_argument(
        "--only", help="comma-separated scenario keys: " + ", ".join(s.key for s in scenarios(False))
    )
    parser.add_argument("--quick", action="store_true", help="a 10 s outage instead of 60 s")
    args = parser.parse_args()
    chosen = scenarios(args.quick)
    if args.only:
        keys = [key.strip() for key in args.only.split(",") if key.strip()]
        unknown = sorted(set(keys) - {s.key for s in chosen})
        if unknown:
            parser.error(f"unknown scenarios {unknown}; choose from {', '.join(s.key for s in chosen)}")
        chosen = [s for s in chosen if s.key in keys]
    if args.rows < 3:
        parser.error("--rows must be at least 3")
    print(
        f"{args.rows} rows, concurrency {CONCURRENCY}, timeout {TIMEOUT_S} s, synthkd {synthkd.__version__}, "
        f"Python {sys.version.split()[0]}\n",
        flush=True,
    )
    results = []
    for scenario in chosen:
        result = measure(scenario, args.rows)
        results.append(result)
        print(
            "  ".join(f"{name}: {cell}" for name, cell in zip(HEADER, result.cells, strict=True)), flush=True
        )
        if result.missed:
            for index, log in enumerate(result.logs):
                tail = "\n".join(log.splitlines()[-15:])
                print(f"--- {scenario.name}, run {index + 1}, last lines:\n{tail}", file=sys.stderr)
    print()
    print(markdown(results))
    missed = [result.name for result in results if result.missed]
    if missed:
        print(f"\ntargets missed: {', '.join(missed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
