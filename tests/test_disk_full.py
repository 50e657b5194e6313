"""A full disk is one clear line naming the path and the fix, never a traceback; it loses nothing
already written: the answers cached before the disk filled stay (a rerun after freeing space sends
only the rest), and an output file being replaced is left whole, never truncated.

The disks are real: a small tmpfs (`small_disk.SmallDisk`) whose writes fail with the kernel's
ENOSPC. A damaged embeddings cache is set aside and rebuilt with a warning (embeddings cost only
local compute to make again), where a damaged request cache stops the run (test_cache_errors.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from publish_run import make_run
from small_disk import SmallDisk, one_error_line

from synthkd.atomic import atomic_write_text, atomic_writer
from synthkd.cli import main
from synthkd.curate.embeddings import EmbeddingCache, embed
from synthkd.errors import StorageFullError
from synthkd.testing.fake_openai import FakeOpenAIServer

MiB = 1 << 20
ROWS = 40


@pytest.fixture
def small_disk(tmp_path: Path):
    disks: list[SmallDisk] = []

    def make(size: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size))
        return disks[-1]

    yield make
    for disk in disks:
        disk.close()


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


def label_recipe(tmp_path: Path, base_url: str, rows: int = ROWS) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Name prime number {i}."} for i in range(rows)])
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "disk-full",
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": base_url,
                "api_key_env": "SYNTHKD_TEST_KEY",
                "timeout": 5,
                "concurrency": 4,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def cached_responses(disk: SmallDisk, env: dict[str, str], cwd: Path) -> int:
    info = disk.synthkd(["cache", "info"], env=env, cwd=cwd)
    assert info.returncode == 0, info.stderr
    return json.loads(info.stdout)["responses"]


def test_a_full_cache_disk_stops_the_run_with_one_line_and_keeps_every_cached_answer(
    tmp_path, small_disk, server
):
    server.reset()
    disk = small_disk(2 * MiB)
    cache_dir = disk.mount_point / "cache"
    env = {**os.environ, "SYNTHKD_TEST_KEY": "sk-test", "SYNTHKD_CACHE_DIR": str(cache_dir)}
    recipe = label_recipe(tmp_path, server.base_url)
    disk.fill(leave=96 * 1024)  # room for some of the answers (about 2 pages of WAL each), not all

    first = disk.synthkd(["run", str(recipe)], env=env, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    message = one_error_line(first)
    cache_file = cache_dir / "requests.sqlite"
    assert f"the disk holding the request cache {cache_file} is full" in message
    assert "the answers already cached are kept" in message
    assert "free some space there, or point SYNTHKD_CACHE_DIR at a disk with room" in message
    assert "run the same command again: it sends only the requests not answered yet" in message
    assert not (tmp_path / "out").exists()
    sent = server.stats()["requests"]
    kept = cached_responses(disk, env, tmp_path)
    assert 0 < kept < ROWS and kept <= sent  # the disk filled midway; what was committed is there

    disk.free()
    server.reset()
    second = disk.synthkd(["run", str(recipe)], env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert server.stats()["requests"] == ROWS - kept  # only the answers the cache did not hold
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert [row["instruction"] for row in rows] == [f"Name prime number {i}." for i in range(ROWS)]
    assert all(row["response"] == f"Answer: {row['instruction']}" for row in rows)


def test_cache_clear_works_on_a_full_disk(tmp_path, small_disk):
    """Emptying the cache in place needs room in its journal; on a full disk its files go instead."""
    disk = small_disk(2 * MiB)
    cache_dir = disk.mount_point / "cache"
    env = {**os.environ, "SYNTHKD_CACHE_DIR": str(cache_dir)}
    fill_cache = (
        "import sys; from pathlib import Path; from synthkd.cache import ResponseCache;"
        "from synthkd.teachers.base import Completion;"
        "cache = ResponseCache(Path(sys.argv[1]));"
        "[cache.put(f'key-{i}', Completion(text='x' * 400, finish_reason='stop')) for i in range(100)];"
        "cache.close()"
    )
    made = disk.run(
        [sys.executable, "-c", fill_cache, str(cache_dir / "requests.sqlite")], env=env, cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    disk.fill()

    cleared = disk.synthkd(["cache", "clear"], env=env, cwd=tmp_path)
    assert cleared.returncode == 0, cleared.stderr
    assert "removed 100 cached responses" in " ".join(cleared.stderr.split())
    assert cached_responses(disk, env, tmp_path) == 0
    assert disk.free_bytes() > 32 * 1024  # the space the answers took is free again


def test_a_full_disk_leaves_the_previous_report_card_and_recipe_whole(tmp_path, small_disk):
    """report.html, README.md and recipe.yaml are written beside and renamed into place.

    The previous files are made small: writing over a file in place frees its space first, so a
    new file no bigger than the old one would fit even on a full disk, and the test would show
    nothing. A new file bigger than the old one plus the room left is cut short in place."""
    made = make_run(tmp_path / "made")
    disk = small_disk(16 * MiB)
    run_dir = disk.mount_point / "run"
    shutil.copytree(made, disk.outside(run_dir))
    assert (made / "report.html").stat().st_size > 16 * 1024  # more than the room left
    before = {}
    for name in ("report.html", "README.md", "recipe.yaml"):
        before[name] = f"the previous {name}\n".encode()
        disk.outside(run_dir / name).write_bytes(before[name])
    env = {**os.environ}
    disk.fill(leave=8 * 1024)

    report = disk.synthkd(["report", str(run_dir)], env=env, cwd=tmp_path)
    assert report.returncode == 1, report.stderr
    message = one_error_line(report)
    assert f"the disk holding the report {run_dir / 'report.html'} is full" in message
    assert "it was not written, and the file there before, if any, is left whole" in message
    assert "free some space there and run the same command again" in message

    disk.fill()
    write_card = (
        "import sys\nfrom synthkd.publish.card import write_card\n"
        "from synthkd.errors import StorageFullError\n"
        "try:\n    write_card(sys.argv[1])\nexcept StorageFullError as exc:\n    print(exc); sys.exit(3)"
    )
    card = disk.run([sys.executable, "-c", write_card, str(run_dir)], env=env, cwd=tmp_path)
    assert card.returncode == 3, card.stdout + card.stderr
    assert f"the disk holding the recipe {run_dir / 'recipe.yaml'} is full" in card.stdout

    after = {name: disk.outside(run_dir / name).read_bytes() for name in before}
    assert after == before  # whole, not cut short
    assert sorted(path.name for path in disk.outside(run_dir).iterdir()) == sorted(
        path.name for path in made.iterdir()
    )  # no temporary file left behind

    disk.free()
    assert disk.synthkd(["report", str(run_dir)], env=env, cwd=tmp_path).returncode == 0
    written = disk.outside(run_dir / "report.html").read_bytes()
    assert len(written) > 16 * 1024 and written.rstrip().endswith(b"</html>")


def test_a_full_output_disk_stops_the_run_with_one_line_and_keeps_the_previous_outputs(
    tmp_path, small_disk, server
):
    server.reset()
    disk = small_disk(8 * MiB)
    out = disk.mount_point / "out"
    env = {**os.environ, "SYNTHKD_TEST_KEY": "sk-test"}
    recipe = label_recipe(tmp_path, server.base_url)
    first = disk.synthkd(["run", str(recipe), "--output", str(out)], env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {path.name: path.read_bytes() for path in disk.outside(out).iterdir() if path.is_file()}
    write_jsonl(
        tmp_path / "seeds.jsonl", [{"instruction": f"Name prime number {i}." * 200} for i in range(ROWS)]
    )
    disk.fill(leave=64 * 1024)

    second = disk.synthkd(["run", str(recipe), "--output", str(out)], env=env, cwd=tmp_path)
    assert second.returncode == 1, second.stderr
    message = one_error_line(second)
    assert f"the disk holding the run folder {out} is full" in message
    after = {path.name: path.read_bytes() for path in disk.outside(out).iterdir() if path.is_file()}
    assert after == before
    left = [path.name for path in disk.outside(disk.mount_point).iterdir()]
    assert not [name for name in left if "staging" in name or "retired" in name], left


# A damaged embeddings cache: set aside, started again, with a warning.


def healthy_embeddings(path: Path) -> list[str]:
    """An embeddings cache of several pages (so truncating it cuts into its data); its hashes."""
    cache = EmbeddingCache(path)
    vectors = {f"{i:040x}": np.full(384, i, dtype=np.float32) for i in range(100)}
    cache.put_many("some-model", vectors)
    cache.close()
    return list(vectors)


def damage(path: Path, kind: str) -> bytes:
    content = path.read_bytes()[:20_000] if kind == "truncated" else os.urandom(50_000)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(content)
    return content


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_a_damaged_embeddings_cache_is_set_aside_and_rebuilt_with_a_warning(
    tmp_path, private_cache, capsys, kind
):
    cache_file = private_cache / "embeddings.sqlite"
    healthy_embeddings(cache_file)
    content = damage(cache_file, kind)
    rows = [
        {"id": "a", "instruction": "How do I bake bread at home?"},
        {"id": "b", "instruction": "How can I bake bread at home?"},
        {"id": "c", "instruction": "What is the capital of France?"},
    ]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "damaged-embeddings",
            "steps": [{"step": "load", "path": "rows.jsonl"}, {"step": "dedup", "method": "embedding"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )
    assert main(["run", str(recipe)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    kept = list(private_cache.glob("embeddings.sqlite.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content  # the damaged file, untouched, beside
    assert f"warning: the embeddings cache {cache_file} was damaged" in err
    assert f"kept it as {kept[0]} and started a new one" in err
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["a", "c"]

    cache = EmbeddingCache(cache_file)  # the new cache holds the vectors just computed
    try:
        _, encoded = embed([row["instruction"] for row in rows], cache=cache)
    finally:
        cache.close()
    assert encoded == 0


def test_damage_past_the_embeddings_header_is_met_by_a_lookup_and_rebuilt(tmp_path):
    cache_file = tmp_path / "embeddings.sqlite"
    hashes = healthy_embeddings(cache_file)
    content = bytearray(cache_file.read_bytes())
    content[2 * 4096 :] = os.urandom(len(content) - 2 * 4096)
    cache_file.write_bytes(bytes(content))

    warnings: list[str] = []
    cache = EmbeddingCache(cache_file, warn=warnings.append)  # opens: the header and schema are whole
    assert cache.get_many("some-model", hashes) == {}  # recomputed, not a crash
    cache.put_many("some-model", {hashes[0]: np.ones(384, dtype=np.float32)})
    assert list(cache.get_many("some-model", hashes)) == [hashes[0]]
    cache.close()
    assert len(warnings) == 1 and "was damaged" in warnings[0]
    assert len(list(tmp_path.glob("embeddings.sqlite.damaged-*"))) == 1


# The helper every output file goes through.


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path):
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "report.html"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("the writer failed midway")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(path.name for path in target.parent.iterdir()) == ["report.html"]

    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert target.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its permissions


def test_atomic_write_replaces_a_links_target_and_cleans_up_after_a_killed_writer(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "README.md"
    link.symlink_to(real)
    stale = tmp_path / ".real.md.tmp-999999999-abcd1234"  # no such process
    stale.write_text("a killed writer's half", encoding="utf-8")
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text(encoding="utf-8") == "new"
    assert not stale.exists()


def test_storage_full_error_is_one_line_with_exit_code_1(tmp_path):
    error = StorageFullError(tmp_path / "x", what="the report", outcome="it was not written")
    assert error.exit_code == 1 and "\n" not in str(error)
    assert str(error) == (
        f"the disk holding the report {tmp_path / 'x'} is full: it was not written; "
        "free some space there and run the same command again"
    )
