"""Prices come from litellm's shipped price map, read without importing litellm."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import write_jsonl, write_recipe

from synthkd.pricing import FREE, price_of
from synthkd.testing.fake_openai import FakeOpenAIServer


@pytest.mark.parametrize("model", ["gpt-4o-mini", "openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"])
def test_prices_are_litellms_own(model):
    import litellm  # the reference: what litellm itself charges with its offline map

    name = model.split("/", 1)[-1]
    info = litellm.model_cost[name]
    price = price_of("openai", model)
    assert price is not None
    assert (price.input_per_token, price.output_per_token) == (
        info["input_cost_per_token"],
        info["output_cost_per_token"],
    )
    assert price.cost(1000, 500) == pytest.approx(
        1000 * info["input_cost_per_token"] + 500 * info["output_cost_per_token"]
    )


def test_unknown_and_local_models():
    assert price_of("openai", "my-self-hosted-model") is None  # unknown, never guessed
    assert price_of("transformers", "embedded") == FREE


def test_an_openai_backend_run_never_imports_litellm(tmp_path):
    """litellm's import costs seconds before the first request; the openai backend needs none of it,
    prices included (the run below is priced: its model is on the map)."""
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}])
    with FakeOpenAIServer() as server:
        teacher = {
            "backend": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.base_url,
            "api_key_env": None,
        }
        recipe = {
            "name": "priced",
            "teacher": teacher,
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": "out"},
        }
        path = write_recipe(tmp_path / "r.yaml", recipe)
        script = (
            "import json, sys; from synthkd.pipeline import run_recipe; "
            "from synthkd.recipe import load_recipe; "
            f"result = run_recipe(load_recipe({str(path)!r})); "
            "print(json.dumps({'litellm': 'litellm' in sys.modules, 'cost': result.manifest['cost_usd']}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["litellm"] is False
    assert seen["cost"] is not None and seen["cost"] > 0
