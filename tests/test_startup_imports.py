"""What `synthkd run` imports before its first request: no heavy library that the recipe does not
need. Each of these cost a run with the openai backend between 0.2 and 2.5 s of startup (the
openai SDK 0.65 s: the openai backend posts over aiohttp without it)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "openai",
    "httpx",
    "litellm",
    "datasketch",
    "scipy",
    "transformers",
    "datasets",
    "torch",
    "sentence_transformers",
]


def test_loading_and_checking_a_recipe_imports_no_heavy_library(tmp_path):
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "Say hi."}\n')
    (tmp_path / "r.yaml").write_text(
        "name: light\n"
        "teacher: {backend: openai, model: gpt-4o-mini, base_url: 'http://127.0.0.1:9/v1',\n"
        "          api_key_env: null}\n"
        "steps: [{step: load, path: seeds.jsonl}, {step: label}, {step: dedup, method: minhash}]\n"
    )
    script = (
        "import json, sys\n"
        "import synthkd.cli\n"
        "from synthkd.pipeline import check\n"
        "from synthkd.progress import quiet_library_progress_bars\n"
        "from synthkd.pricing import price_of\n"
        "from synthkd.recipe import load_recipe\n"
        "from synthkd.teachers.registry import build_teacher\n"
        "loaded = load_recipe('r.yaml')\n"
        "check(loaded)\n"
        "quiet_library_progress_bars()\n"
        "price_of('openai', 'gpt-4o-mini')\n"
        "build_teacher(loaded.recipe.teacher)\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_switching_bars_off_waits_for_a_library_another_thread_is_importing():
    """`datasets` is imported in a thread while the teacher answers; it is in sys.modules long
    before it is whole, and the bars' switch must not meet it half made."""
    script = (
        "import sys, time\n"
        "from synthkd.output import import_writer_in_background\n"
        "from synthkd.progress import quiet_library_progress_bars\n"
        "import_writer_in_background()\n"
        "while 'datasets' not in sys.modules:\n"
        "    time.sleep(0.0005)\n"
        "quiet_library_progress_bars()\n"
        "import datasets\n"
        "print(datasets.is_progress_bar_enabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"
