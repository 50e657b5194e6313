"""`synthkd experiment`: the same student trained several ways at one budget and compared on rows
none of them trained on. Here on tiny random models (a teacher and a smaller student sharing one
tokenizer), so the whole code path runs in CI in well under a minute; the real experiment
(recipes/experiments/distillation.yaml) is a benchmark."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pytest
from datasets import load_from_disk
from helpers import run_cli, write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.experiment.run import mean_and_interval
from synthkd.publish.svg_charts import count_text
from synthkd.testing.fake_openai import FakeOpenAIServer

ARMS = [
    {"name": "sft", "method": "sft"},
    {"name": "kd", "method": "kd", "kd_weight": 1.0},
    {"name": "on-policy", "method": "distill", "divergence": "forward_kl"},
    {"name": "curated", "method": "sft", "data": "curated"},
    {"name": "raw-rows", "method": "sft", "data": "raw_rows"},
    {"name": "raw-tokens", "method": "sft", "data": "raw_tokens"},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    return build_tiny_model(folder / "teacher", seed=1), build_tiny_model(folder / "student", seed=2)


def experiment_recipe(tmp_path: Path, teacher: Path, student: Path, judge: dict | None = None) -> Path:
    write_jsonl(
        tmp_path / "seeds.jsonl", [{"instruction": f"Describe the fox number {i}."} for i in range(24)]
    )
    return write_recipe(
        tmp_path / "experiment.yaml",
        {
            "name": "tiny-experiment",
            "teacher": {
                "backend": "transformers",
                "model": str(teacher),
                "params": {"max_tokens": 8, "temperature": 0},
            },
            "steps": [
                {"step": "load", "path": "seeds.jsonl"},
                {"step": "label"},
                {"step": "logits", "top_k": 5},
            ],
            "output": {"report": "basic"},
            "experiment": {
                "student": str(student),
                "held_out": 6,
                "seeds": [1, 2, 3],
                "args": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
                "arms": ARMS,
                # Curation here: drop the prompts ending in an odd number (about half the rows).
                "curate": [{"step": "filter", "column": "instruction", "drop_regex": "[13579]\\.$"}],
                "max_new_tokens": 4,
                **({"judge": judge} if judge else {}),
            },
        },
    )


def test_every_arm_trains_per_seed_and_is_compared_on_held_out_rows(tmp_path, models, capsys):
    teacher, student = models
    # A judge that always prefers the first answer shown: the swapped order makes every pair a tie.
    with FakeOpenAIServer(script=[{"match": ".", "reply": '{"winner": "A"}'}]) as judge_server:
        judge = {
            "backend": "openai",
            "model": "judge",
            "base_url": judge_server.base_url,
            "api_key_env": None,
        }
        recipe = experiment_recipe(tmp_path, teacher, student, judge)
        code, out = run_cli(["experiment", str(recipe), "--output", "run", "--docs", "docs-out"], capsys)
        assert code == 0, out
        assert judge_server.stats()["requests"] > 0  # the same pair twice is asked once (the cache)
        assert "'loss':" not in out and "'grad_norm':" not in out  # training on bars, not log dicts
    work = tmp_path / "run" / "experiment"
    results = json.loads((work / "results.json").read_text())

    # Every arm, once per seed, each with its held-out figures.
    assert sorted((run["arm"], run["seed"]) for run in results["runs"]) == sorted(
        (arm["name"], seed) for arm in ARMS for seed in (1, 2, 3)
    )
    for run in results["runs"]:
        assert all(math.isfinite(run["metrics"][name]) for name in ("kl", "loss", "perplexity", "agreement"))
        # Each of the 6 held-out pairs judged in both orders: always "A" is a tie every time.
        assert run["metrics"]["win_rate"] == 0.5 and run["metrics"]["judge"]["ties"] == 6
        assert run["metrics"]["rows"] == 6 and run["metrics"]["kl"] >= 0
        assert run["tokens"] > 0  # on-policy runs count the tokens they generated
    assert results["before"]["kl"] > 0  # two different random models
    # The summary is the mean and 95% CI over the seeds of each arm.
    for line in results["summary"]:
        values = [run["metrics"]["kl"] for run in results["runs"] if run["arm"] == line["arm"]]
        assert line["kl"] == pytest.approx(list(mean_and_interval(values)))
        assert line["seeds"] == 3

    # No arm trained on a held-out row; the data kinds have the sizes they promise.
    held_out = set(results["held_out_ids"])
    assert len(held_out) == 6
    sizes = results["rows"]
    assert sizes["held_out"] == 6 and sizes["all"] == 24 - 6
    for kind in ("all", "curated", "raw_rows", "raw_tokens"):
        trained_ids = set(load_from_disk(str(work / "data" / kind))["id"])
        assert not trained_ids & held_out
        assert len(trained_ids) == sizes[kind]
    assert 0 < sizes["curated"] < sizes["all"] and sizes["raw_rows"] == sizes["curated"]
    kept = load_from_disk(str(work / "data" / "curated"))
    assert not any(instruction.rstrip(".")[-1] in "13579" for instruction in kept["instruction"])
    curated_words = sum(len(m[-1]["content"].split()) for m in kept["messages"])
    raw = load_from_disk(str(work / "data" / "raw_tokens"))
    raw_words = [len(m[-1]["content"].split()) for m in raw["messages"]]
    assert sum(raw_words) >= curated_words and sum(raw_words) - max(raw_words) < curated_words

    assert not (work / "sft" / "seed-1").exists()  # students are not kept unless asked (keep_students)
    table = (work / "results.md").read_text()
    for arm in ARMS:
        assert f"| {arm['name']} | {arm['method']} |" in table
    assert "student before training" in table and "±" in table and "judge win rate" in table
    chart = (work / "kl.svg").read_text()
    assert chart.startswith("<svg")
    # Each arm's bar has its 95% CI as an error bar (a line and two caps) and one label, mean ± CI.
    assert chart.count('stroke="#222"') == 3 * sum(line["kl"][1] > 0 for line in results["summary"])
    for line in results["summary"]:
        mean, interval = line["kl"]
        assert f">{mean:.3f} ± {interval:.3f}<" in chart
        assert f">{count_text(mean)}<" not in chart  # not a second label, the bare mean, beside it
    assert (tmp_path / "docs-out" / "results.md").read_text() == table

    # The run's report shows the same table, and the chart, in its experiment section.
    page = (tmp_path / "run" / "report.html").read_text()
    section = page[page.index('<section id="experiment">') :]
    section = section[: section.index("</section>")]
    assert (work / "kl.svg").read_text() in section
    for line in results["table"]["rows"]:
        assert "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in line) + "</tr>" in section
    assert len(results["table"]["rows"]) == len(ARMS) + 1  # and the student before training


def test_forward_kl_is_zero_against_itself_and_positive_against_another(models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthkd.training.evaluation import forward_kl

    teacher_dir, student_dir = models
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    conversations = [
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "The quick fox."}]
    ]
    assert forward_kl(teacher, teacher, tokenizer, conversations) == pytest.approx(0, abs=1e-6)
    assert forward_kl(teacher, student, tokenizer, conversations) > 0.01


def test_an_experiment_needs_a_local_teacher(tmp_path, models, capsys, listening_port):
    teacher, student = models
    recipe = experiment_recipe(tmp_path, teacher, student)
    overrides = [
        "--set",
        "teacher.backend=openai",
        "--set",
        f"teacher.base_url=http://127.0.0.1:{listening_port}/v1",
    ]
    overrides += ["--set", "teacher.api_key_env=null", "--set", "teacher.params={}"]
    code, out = run_cli(["experiment", str(recipe), *overrides], capsys)
    assert code == 2 and "teacher.backend" in out and "local model" in out
