"""`engine: ray`: the row-wise steps as Ray Data batches over shards on a Ray cluster (a real local
one, started here with two CPUs), the other steps in the driver. The dataset must be the local
engine's; a worker killed mid-run must cost no row and double none; a driver killed mid-run must,
on the same command again, run only the shards it had not finished."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray  # the ray extra is part of the test install (make test)
from helpers import read_jsonl, run_cli, write_jsonl, write_recipe

from synthkd.engines.ray_engine import actor_placement, shard_folder_root, shared_limits
from synthkd.recipe import EngineConfig, load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer

ROWS = 40
SHARD_ROWS = 5  # 8 shards
# Item 8's label fails for good: its failure must come back once, from the shard that had it.
# The judge scores items 20-29 low (dropped) and the rest high.
JUDGE = "(?s)impartial judge.*"
SCRIPT = [
    {"match": r"^Describe item 8\.", "status": 400, "message": "scripted rejection"},
    {"match": JUDGE + r"item 2\d\.", "reply": '{"score": 2, "justification": "weak"}'},
    {"match": JUDGE, "reply": '{"score": 8, "justification": "fine"}'},
]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for the module: its address lets a driver in a subprocess join it."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # as the engine does
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server():
    # Slow enough that a shard takes about a second at the concurrency each actor gets (1).
    with FakeOpenAIServer(script=SCRIPT, latency_ms=150) as running:
        yield running


STEPS = [
    {"step": "load", "path": "seeds.jsonl"},
    {"step": "label"},  # row-wise: on Ray
    {"step": "dedup", "method": "exact", "columns": ["response"]},  # in the driver
    # Row-wise again: filter (no teacher) and judge go to Ray together.
    {"step": "filter", "drop_regex": r"item 1\d\b"},
    {"step": "judge", "min_score": 5},
]


def recipe(tmp_path: Path, server: FakeOpenAIServer, **engine) -> Path:
    # Every fifth instruction repeats an earlier one: exact dedup (in the driver) drops them.
    seeds = [{"instruction": f"Describe item {i if i % 5 else i - 3}."} for i in range(ROWS)]
    write_jsonl(tmp_path / "seeds.jsonl", seeds)
    return write_recipe(
        tmp_path / "ray.yaml",
        {
            "name": "ray-run",
            "teacher": {
                "backend": "openai",
                "model": "gpt-4o-mini",
                "base_url": server.base_url,
                "api_key_env": None,
                "max_attempts": 1,
                "concurrency": 2,
            },
            "steps": STEPS,
            "output": {"report": "none", "max_failure_ratio": 0.5},
            "engine": {"name": "ray", "shard_rows": SHARD_ROWS, **engine},
        },
    )


def run_folder_rows(folder: Path) -> list[dict]:
    return read_jsonl(folder / "data.jsonl")


def local_run(tmp_path: Path, server: FakeOpenAIServer, capsys) -> tuple[list[dict], dict]:
    """The same recipe on the local engine, with a cache of its own (every answer asked again):
    its rows and its manifest."""
    path = recipe(tmp_path, server)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTHKD_CACHE_DIR", str(tmp_path / "local-cache"))
        code, out = run_cli(["run", str(path), "--engine", "local", "--output", "local"], capsys)
        assert code == 0, out
    manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    return run_folder_rows(tmp_path / "local"), manifest


# What a step's line in the manifest says of its rows and requests (not its time). Not cache_hits:
# the local engine asks a prompt that repeats within a step once and counts no hit, while shards
# on other actors find the answer in the cache (7 here).
FUNNEL = ("rows_in", "rows_out", "rows_failed", "rows_dropped", "requests_sent", "details")


def test_ray_gives_the_local_engines_dataset(tmp_path, server, cluster, capsys):
    path = recipe(tmp_path, server)
    server.reset()
    code, out = run_cli(["run", str(path), "--output", "on-ray"], capsys)
    assert code == 0, out
    sent_on_ray = server.stats()["requests"]
    manifest = json.loads((tmp_path / "on-ray" / "manifest.json").read_text())
    server.reset()
    expected, local_manifest = local_run(tmp_path, server, capsys)

    rows = run_folder_rows(tmp_path / "on-ray")
    assert rows == expected  # same rows, same order, same provenance
    assert sent_on_ray == server.stats()["requests"] >= 30  # every answer asked, by the actors
    for step, local_step in zip(manifest["steps"], local_manifest["steps"], strict=True):
        assert {key: step[key] for key in FUNNEL} == {key: local_step[key] for key in FUNNEL}
    label, dedup, filtered, judged = manifest["steps"][1:]
    assert label["rows_failed"] == 1 and dedup["rows_dropped"] and filtered["rows_dropped"]
    assert judged["rows_dropped"] and judged["rows_out"] == len(rows) > 0
    failures = read_jsonl(tmp_path / "on-ray" / "failures.jsonl")
    assert failures == read_jsonl(tmp_path / "local" / "failures.jsonl")
    assert [engine["steps"] for engine in manifest["engine"]] == [["1:label"], ["3:filter", "4:judge"]]
    assert manifest["engine"][0]["shards"] == 8 and manifest["engine"][0]["workers"] == 2
    assert manifest["engine"][0]["resumed_shards"] == 0
    assert "engine" not in local_manifest
    # Once a run of steps is through, its shards are not kept.
    assert not any(shard_folder_root().glob("*/*.json"))


def _shard_workers() -> list[int]:
    """The pids of the actor processes running shards (Ray names them after their class)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ShardRunner" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_doubles_no_row(tmp_path, server, cluster, capsys):
    path = recipe(tmp_path, server)
    killed: list[int] = []

    def kill_a_worker_once_a_shard_is_done() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            workers = _shard_workers()
            done = len(list(shard_folder_root().glob("*/*.json")))
            if done and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(done)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_once_a_shard_is_done)
    killer.start()
    code, out = run_cli(["run", str(path), "--output", "on-ray"], capsys)
    killer.join()
    assert killed, "no shard worker was found to kill"
    assert killed[0] < ROWS // SHARD_ROWS  # killed while shards were left to run
    assert code == 0, out
    rows = run_folder_rows(tmp_path / "on-ray")
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert rows == local_run(tmp_path, server, capsys)[0]
    assert len(read_jsonl(tmp_path / "on-ray" / "failures.jsonl")) == 1


@pytest.mark.slow
def test_a_killed_driver_reruns_only_its_unfinished_shards(tmp_path, server, cluster, capsys):
    path = recipe(tmp_path, server, address=cluster)
    command = [sys.executable, "-m", "synthkd.cli", "run", str(path), "--output", "resumed"]
    driver = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if len(list(shard_folder_root().glob("*/*.json"))) >= 3:
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = [json.loads(path.read_text()) for path in shard_folder_root().glob("*/*.json")]
    assert 3 <= len(finished) < ROWS // SHARD_ROWS, (
        f"killed too late or too early: {len(finished)} shards done"
    )
    # The instructions of the rows no finished shard had (a failed row is in its shard's failures).
    finished_rows = [row for shard in finished for row in shard["rows"]]
    finished_rows += [failure["row"] for shard in finished for _, failure in shard["failures"]]
    seeds = Counter(row["instruction"] for row in read_jsonl(tmp_path / "seeds.jsonl"))
    unfinished = seeds - Counter(row["instruction"] for row in finished_rows)
    assert sum(unfinished.values()) == ROWS - len(finished) * SHARD_ROWS

    server.reset()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    asked = [text for _, text in server.arrivals() if text.startswith("Describe")]  # label's
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["engine"][0]["resumed_shards"] == len(finished)
    # Only the unfinished shards' rows were asked (those answered before the kill, from the cache).
    assert asked and set(asked) <= set(unfinished)
    rows = run_folder_rows(tmp_path / "resumed")
    assert len({row["id"] for row in rows}) == len(rows)
    assert rows == local_run(tmp_path, server, capsys)[0]
    assert not shard_folder_root().exists() or not any(shard_folder_root().iterdir())


def test_limits_are_split_among_the_actors(tmp_path, server):
    loaded = load_recipe(recipe(tmp_path, server))
    label = loaded.recipe.steps[1]
    label.teacher.rpm, label.teacher.tpm = 600, 90_000
    split = shared_limits(label, 4).teacher
    assert (split.concurrency, split.rpm, split.tpm) == (1, 150, 22_500)
    wide = label.model_copy(update={"teacher": label.teacher.model_copy(update={"concurrency": 10})})
    assert shared_limits(wide, 4).teacher.concurrency * 4 <= 10  # never more in flight than allowed
    assert shared_limits(label, 1) is label
    assert label.teacher.concurrency == 2  # the recipe's own step is left as it was


def test_placement_follows_the_teachers(tmp_path, server):
    loaded = load_recipe(recipe(tmp_path, server))
    api_steps = loaded.recipe.steps[1:2]
    config = EngineConfig(name="ray")
    # An actor per CPU, but never more actors than requests the recipe lets fly (concurrency 2).
    assert vars(actor_placement(api_steps, {"CPU": 8.0}, config)) == {"workers": 2, "cpus": 1, "gpus": 0}
    wide = api_steps[0].model_copy(
        update={"teacher": api_steps[0].teacher.model_copy(update={"concurrency": 64})}
    )
    assert vars(actor_placement([wide], {"CPU": 8.0}, config))["workers"] == 8
    local = api_steps[0].model_copy(
        update={"teacher": api_steps[0].teacher.model_copy(update={"backend": "transformers"})}
    )
    assert vars(actor_placement([local], {"CPU": 8.0}, config)) == {"workers": 1, "cpus": 8, "gpus": 0}
    assert vars(actor_placement([local], {"CPU": 8.0, "GPU": 2.0}, config)) == {
        "workers": 2,
        "cpus": 1,
        "gpus": 1,
    }
    pinned = EngineConfig(name="ray", workers=3)
    assert vars(actor_placement([wide], {"CPU": 8.0}, pinned))["workers"] == 3
    # Never more actors than the cluster holds at once.
    assert actor_placement([wide], {"CPU": 2.0}, pinned).fitting({"CPU": 2.0}) == 2
    assert actor_placement([local], {"CPU": 8.0, "GPU": 2.0}, pinned).fitting({"CPU": 8.0, "GPU": 2.0}) == 2


def test_ray_engine_refusals(tmp_path, server, capsys):
    path = recipe(tmp_path, server)
    code, out = run_cli(["run", str(path), "--set", "max_cost_usd=5"], capsys)
    assert code == 2 and "engine: ray cannot hold a spending cap" in out
    code, out = run_cli(["run", str(path), "--set", "teacher.batch=true"], capsys)
    assert code == 2 and "batch" in out and "engine: local" in out
    code, out = run_cli(["run", str(path), "--set", "engine.shard_rows=0"], capsys)
    assert code == 2 and "engine.shard_rows" in out


def test_a_fatal_teacher_error_in_an_actor_is_the_runs_one_line_error(tmp_path, server, cluster, capsys):
    server.configure(require_key="sk-the-right-one")
    try:
        code, out = run_cli(["run", str(recipe(tmp_path, server)), "--output", "refused"], capsys)
    finally:
        server.configure(require_key=None)
    assert code == 1
    assert "HTTP 401" in out and "api_key_env" in out
    # synthkd's error, not Ray's wrapping of it (Ray's own notes on actors it stops may print too)
    assert "RayTaskError" not in out and "UserCodeException" not in out
    assert not (tmp_path / "refused").exists()


def test_cache_clear_removes_unfinished_shards(capsys):
    left = shard_folder_root() / "0123" / "4567.json"
    left.parent.mkdir(parents=True)
    left.write_text("{}")
    code, out = run_cli(["cache", "clear"], capsys)
    assert code == 0, out
    assert not shard_folder_root().exists()


@pytest.mark.parametrize("encoder", ["transformer", "static"])
def test_embedding_dedup_encodes_on_the_actors(tmp_path, server, cluster, capsys, encoder):
    """dedup runs in the driver (it compares every row with every other), but its texts are
    encoded by the engine's encoder actors, with either encoder (an actor distils the static
    one into the run's cache folder); the decisions are the local engine's."""
    path = recipe(tmp_path, server)
    dedup = {"step": "dedup", "method": "embedding", "columns": ["response"], "threshold": 0.99}
    steps = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}, {**dedup, "encoder": encoder}]
    overrides = ["--set", f"steps={json.dumps(steps)}", "--set", "engine.shard_rows=16"]
    code, out = run_cli(["run", str(path), *overrides, "--output", "on-ray"], capsys)
    assert code == 0, out
    manifest = json.loads((tmp_path / "on-ray" / "manifest.json").read_text())
    encoded = [entry for entry in manifest["engine"] if "encoded" in entry]
    spec = "embedded" if encoder == "transformer" else "static:embedded"
    assert [(entry["encoded"], entry["model"], entry["workers"]) for entry in encoded] == [(32, spec, 1)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTHKD_CACHE_DIR", str(tmp_path / "local-cache"))  # nothing encoded yet there
        code, out = run_cli(["run", str(path), *overrides, "--engine", "local", "--output", "local"], capsys)
        assert code == 0, out
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert run_folder_rows(tmp_path / "on-ray") == run_folder_rows(tmp_path / "local")
    assert manifest["steps"][2]["details"] == local_manifest["steps"][2]["details"]
    dropped = manifest["steps"][2]["rows_dropped"]["duplicate_embedding"]
    # The label step's 7 repeated answers; the static encoder (a mean of word vectors) also takes
    # answers that differ only slightly for duplicates at 0.99 (one more here, on both engines).
    assert dropped == 7 if encoder == "transformer" else dropped >= 7


@pytest.mark.slow
def test_a_run_short_of_answers_is_made_whole_by_running_it_again(tmp_path, cluster, capsys):
    """Rows lost to an outage are not kept as done: the rerun asks them again, as the local
    engine's rerun would."""
    # Nine rows ask "item 3N" (31-34, 35 repeating 32, 36-39): each gets one 503, then answers.
    outage = [{"match": r"^Describe item 3\d\.", "status": 503, "message": "scripted outage", "times": 9}]
    with FakeOpenAIServer(script=outage) as flaky:
        path = recipe(tmp_path, flaky)
        short = [
            "run",
            str(path),
            "--set",
            "output.max_failure_ratio=0.1",
            "--set",
            "steps=" + json.dumps(STEPS[:2]),
        ]
        code, out = run_cli(short, capsys)
        assert code == 3 and "lost 9 of 40 rows" in out
        code, out = run_cli(short, capsys)
        assert code == 0, out
        assert len(run_folder_rows(tmp_path / "runs" / "ray-run")) == ROWS  # every row, this time


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_run_promptly(tmp_path, server):
    """Interrupted, the driver stops taking shards, stops the cluster it started and exits 130."""
    path = recipe(tmp_path, server)
    command = [sys.executable, "-m", "synthkd.cli", "run", str(path), "--output", "stopped"]
    # A session (and process group) of its own: the local cluster the driver starts is in it, so
    # whatever the test's outcome, nothing is left running to slow the tests after it.
    driver = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None and not _shards_written():
            time.sleep(0.05)
        assert _shards_written(), "the run wrote no shard: nothing was in progress to interrupt"
        driver.send_signal(signal.SIGINT)
        clock = time.monotonic()
        _, err = driver.communicate(timeout=120)
        stopped_after = time.monotonic() - clock
        assert driver.returncode == 130, err
        assert stopped_after < 30, f"took {stopped_after:.0f} s to stop"
        assert "Traceback" not in err and "interrupted" in err, err
        assert _session_ends(driver.pid, within_s=60), "the cluster the driver started still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def _shards_written() -> bool:
    return any(shard_folder_root().glob("*/*.json"))


def _session_ends(session: int, within_s: float) -> bool:
    """Whether every process of `session` is gone (or a zombie) within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        states = subprocess.run(["ps", "-o", "stat=", "-s", str(session)], capture_output=True, text=True)
        if all(state.startswith("Z") for state in states.stdout.split()):
            return True
        time.sleep(0.5)
    return False


def test_an_unreachable_cluster_is_one_line(tmp_path, server, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = recipe(tmp_path, server)
    # In a process of its own: this one is connected to the tests' cluster.
    command = [sys.executable, "-m", "synthkd.cli", "run", str(path), "--address", f"127.0.0.1:{port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert "engine.address" in out and "cannot reach the Ray cluster" in out and "Traceback" not in out
