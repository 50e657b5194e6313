"""Bad input: one clear message naming the file, line or key; exit code 2; nothing sent or written."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import run_cli, write_jsonl

GOOD = """\
name: t
teacher:
  backend: openai
  model: gpt-4o-mini
  api_key_env: SYNTHKD_TEST_KEY
  base_url: http://127.0.0.1:{port}/v1
steps:
  - step: load
    path: seeds.jsonl
  - step: label
    prompt: {prompt}
  - step: filter
    min_chars: 5
output:
  dir: out
"""


@pytest.fixture
def recipe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}, {"instruction": "Name a colour."}])
    (tmp_path / "ask.jinja").write_text("{{ instruction }} ({{ topic }})")
    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    return tmp_path


def write(recipe_dir: Path, text: str) -> Path:
    path = recipe_dir / "recipe.yaml"
    path.write_text(text)
    return path


def test_valid_recipe_validates(recipe_dir, capsys, listening_port):
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/label.jinja"))
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
    assert "3 steps valid" in out


def test_malformed_yaml_names_line(recipe_dir, capsys):
    path = write(recipe_dir, "name: t\nsteps:\n  - step: load\n   path: [unclosed\n")
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert f"{path}:4" in out and "malformed YAML" in out


def test_unknown_key_suggests_the_right_one(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja").replace("    prompt:", "    promt:")
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    assert "recipe.yaml:11: steps.1.promt: unknown key 'promt' (did you mean 'prompt'?)" in out


def test_unknown_step_lists_valid_ones(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="x").replace("step: filter", "step: filtr")
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    assert "recipe.yaml:12: steps.2.step: unknown step 'filtr' (did you mean 'filter'?)" in out
    assert "valid steps: load, label, filter" in out


def test_bad_value_names_key_and_choices(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="x").replace("backend: openai", "backend: opena")
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    assert "recipe.yaml:3: teacher.backend" in out and "'openai', 'litellm', 'transformers' or 'vllm'" in out


def test_missing_data_file(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="x").replace("seeds.jsonl", "nope.jsonl")
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    assert "recipe.yaml:9: steps.0.path: file not found: nope.jsonl" in out


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("seed.jsonl", "seeds.jsonl"),  # a letter short
        ("seeds.json", "seeds.jsonl"),  # the suffix
        ("dta/more_seeds.jsonl", "data/more_seeds.jsonl"),  # a folder
        ("data/mor_seeds.jsonl", "data/more_seeds.jsonl"),  # a file in a subfolder
    ],
)
def test_a_missing_file_suggests_the_close_names_in_its_folder(
    recipe_dir, capsys, listening_port, written, meant
):
    (recipe_dir / "data").mkdir()
    write_jsonl(recipe_dir / "data" / "more_seeds.jsonl", [{"instruction": "Say hi."}])
    write_jsonl(recipe_dir / "data" / "other.jsonl", [{"instruction": "Say hi."}])
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja").replace("seeds.jsonl", written)
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    assert f"recipe.yaml:9: steps.0.path: file not found: {written}; did you mean {meant}?" in out
    # What it suggests is written as the recipe would write it: it validates.
    code, out = run_cli(["validate", str(write(recipe_dir, text.replace(written, meant)))], capsys)
    assert code == 0, out


def test_a_missing_file_with_no_close_name_says_where_it_was_looked_for(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="x").replace("seeds.jsonl", "questions.jsonl")
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2
    expected = (
        f"steps.0.path: file not found: questions.jsonl (looked in the recipe's folder ({recipe_dir}) "
        "and synthkd's shipped prompts and recipes)"
    )
    assert expected in out and "did you mean" not in out


def test_a_mistyped_template_suggests_the_recipe_folders_and_the_shipped_ones(
    recipe_dir, capsys, listening_port
):
    code, out = run_cli(
        ["validate", str(write(recipe_dir, GOOD.format(port=listening_port, prompt="ask.jnja")))], capsys
    )
    assert code == 2
    assert "recipe.yaml:11: steps.1.prompt: template not found: ask.jnja; did you mean ask.jinja?" in out
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/labl.jinja"))  # a shipped one
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "template not found: prompts/labl.jinja; did you mean prompts/label.jinja?" in out


@pytest.mark.parametrize(
    ("written", "meant"),
    [("recipes/quikstart.yaml", "recipes/quickstart.yaml"), ("quickstrt.yaml", "quickstart.yaml")],
)
def test_a_mistyped_recipe_path_suggests_the_shipped_recipe(capsys, written, meant):
    code, out = run_cli(["validate", written], capsys)
    assert code == 2
    assert f"error: recipe file not found: {written}; did you mean {meant}?" in out


@pytest.mark.parametrize("name", ["quickstart", "law/doc_qa", "recipes/law/doc_qa", "law/doc_qa.yaml"])
def test_a_shipped_recipe_is_named_alike_in_every_command(capsys, monkeypatch, name):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out = run_cli(["validate", name, "--allow-missing-key"], capsys)
    assert code == 0, out
    assert (
        f"recipes/{name.removeprefix('recipes/').removesuffix('.yaml')}.yaml: " in out
        and "steps valid" in out
    )


def test_a_mistyped_recipe_name_suggests_recipes_only(tmp_path, capsys):
    (tmp_path / "quickstart.log").write_text("a log, not a recipe")
    (tmp_path / "quickstart_notes.txt").write_text("")
    code, out = run_cli(["validate", "quikstart"], capsys)
    assert code == 2
    assert "error: recipe file not found: quikstart; did you mean quickstart?" in out
    (tmp_path / "quickstart_mine.yaml").write_text("name: mine\n")  # a recipe of the user's: suggested first
    code, out = run_cli(["validate", "quickstart_mne.yaml"], capsys)
    assert code == 2 and "did you mean quickstart_mine.yaml or quickstart?" in out, out


def test_missing_template_file(recipe_dir, capsys, listening_port):
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="missing.jinja"))
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "recipe.yaml:11: steps.1.prompt: template not found: missing.jinja" in out


def test_template_variable_the_data_lacks(recipe_dir, capsys, listening_port):
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="ask.jinja"))
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2
    assert "steps.1.prompt: template ask.jinja needs column(s) topic" in out
    assert "instruction" in out  # lists what the rows do have
    assert not (recipe_dir / "out").exists()


def test_malformed_data_line(recipe_dir, capsys, listening_port):
    (recipe_dir / "seeds.jsonl").write_text('{"instruction": "ok"}\n{"instruction": oops}\n')
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="x"))
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "seeds.jsonl:2: invalid JSON" in out


def test_missing_api_key_variable_stops_run_and_validate(recipe_dir, capsys, listening_port, monkeypatch):
    monkeypatch.delenv("SYNTHKD_TEST_KEY")
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/label.jinja"))
    expected = "recipe.yaml:5: teacher.api_key_env: environment variable SYNTHKD_TEST_KEY is not set"
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2
    assert expected in out
    assert not (recipe_dir / "out").exists()
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert expected in out and "to validate the recipe without it, add --allow-missing-key" in out
    assert "steps valid" not in out
    # Told the key will be there when it runs, validate checks the rest and only warns.
    code, out = run_cli(["validate", str(path), "--allow-missing-key"], capsys)
    assert code == 0 and f"warning: {path.parent}/{expected}" in out and "3 steps valid" in out


def test_unreachable_base_url(recipe_dir, capsys):
    with socket.socket() as sock:  # a port nothing listens on: bound, then closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write(recipe_dir, GOOD.format(port=port, prompt="prompts/label.jinja"))
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2
    assert f"recipe.yaml:6: teacher.base_url: cannot reach http://127.0.0.1:{port}/v1" in out
    assert not (recipe_dir / "out").exists()


def test_credentials_in_a_base_url_are_refused(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja")
    path = write(recipe_dir, text.replace("http://127.0.0.1", "http://user:hunter2@127.0.0.1"))
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2
    assert "recipe.yaml:6: teacher.base_url: " in out and "must not contain user:password@" in out
    assert "hunter2" not in out and not (recipe_dir / "out").exists()


def test_secrets_in_teacher_params_are_refused(recipe_dir, capsys, listening_port):
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja")
    leaky = text.replace(
        "  api_key_env: SYNTHKD_TEST_KEY\n",
        "  api_key_env: SYNTHKD_TEST_KEY\n  params: {max_tokens: 5, extra_headers: {Authorization: sk-x9}}\n",
    )
    code, out = run_cli(["validate", str(write(recipe_dir, leaky))], capsys)
    assert code == 2
    assert "teacher.params: params.extra_headers.Authorization looks like a secret" in out
    assert "sk-x9" not in out and "max_tokens" not in out


def test_set_override_errors_name_the_flag(recipe_dir, capsys, listening_port):
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/label.jinja"))
    code, out = run_cli(["validate", str(path), "--set", "teacher.modle=x"], capsys)
    assert code == 2
    assert "--set teacher.modle: teacher.modle: unknown key 'modle' (did you mean 'model'?)" in out
    code, out = run_cli(["validate", str(path), "--set", "steps.7.n=2"], capsys)
    assert code == 2
    assert "steps has 3 items" in out
    code, out = run_cli(["validate", str(path), "--set", "steps.1.n=0"], capsys)
    assert code == 2
    assert "--set steps.1.n: steps.1.n: Input should be greater than or equal to 1" in out


def test_set_overrides_values(recipe_dir, listening_port):
    from synthkd.recipe import load_recipe

    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/label.jinja"))
    loaded = load_recipe(path, ["teacher.model=gpt-4.1", "steps.1.n=2", "teacher.params.temperature=0"])
    assert loaded.recipe.teacher.model == "gpt-4.1"
    label = loaded.recipe.steps[1]
    assert label.n == 2
    # A step's teacher inherits the recipe's, overrides included.
    assert label.teacher.model == "gpt-4.1" and label.teacher.params == {"temperature": 0}


def test_step_teacher_overrides_key_by_key(recipe_dir, listening_port):
    from synthkd.recipe import load_recipe

    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja") + "params_placeholder: 1\n"
    text = (
        text.replace("params_placeholder: 1\n", "")
        .replace(
            "    prompt: prompts/label.jinja\n",
            "    prompt: prompts/label.jinja\n    teacher: {model: other, params: {max_tokens: 9}}\n",
        )
        .replace("  base_url:", "  params: {temperature: 0.5}\n  base_url:")
    )
    loaded = load_recipe(write(recipe_dir, text))
    teacher = loaded.recipe.steps[1].teacher
    assert teacher.model == "other" and teacher.backend == "openai"
    assert teacher.params == {"temperature": 0.5, "max_tokens": 9}
    assert loaded.recipe.teacher.model == "gpt-4o-mini"


def test_recipe_without_teacher_uses_embedded(recipe_dir):
    from synthkd.recipe import load_recipe

    path = write(recipe_dir, "name: t\nsteps:\n  - step: load\n    path: seeds.jsonl\n  - step: label\n")
    teacher = load_recipe(path).recipe.steps[1].teacher
    assert (teacher.backend, teacher.model, teacher.api_key_env) == ("transformers", "embedded", None)


def test_unsupported_local_param(recipe_dir, capsys):
    path = write(
        recipe_dir,
        "name: t\nteacher:\n  backend: transformers\n  model: embedded\n"
        "  params: {frequency_penalty: 1}\nsteps:\n  - step: load\n    path: seeds.jsonl\n"
        "  - step: label\n",
    )
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "recipe.yaml:5: teacher.params.frequency_penalty: frequency_penalty (did you mean" in out
    assert "not supported by the transformers backend; valid: max_new_tokens, max_tokens," in out


OPENAI_AT_OPENAI = GOOD.replace("  base_url: http://127.0.0.1:{port}/v1\n", "")  # api.openai.com: closed


@pytest.mark.parametrize(
    ("recipe", "backend", "extra"),
    [
        (OPENAI_AT_OPENAI, "openai", []),  # OpenAI's own endpoint: its documented params only
        (GOOD, "openai", []),  # another OpenAI-compatible server: typos of known params
        (GOOD, "litellm", ["--set", "teacher.backend=litellm"]),
        (GOOD, "transformers", ["--set", "teacher.backend=transformers", "--set", "teacher.model=embedded"]),
    ],
)
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("temprature", "temperature"), ("max_token", "max_tokens"), ("top-p", "top_p")],
)
def test_a_mistyped_teacher_param_is_refused_with_the_name_it_resembles(
    recipe_dir, capsys, listening_port, recipe, backend, extra, typo, meant
):
    path = write(recipe_dir, recipe.format(port=listening_port, prompt="prompts/label.jinja"))
    code, out = run_cli(["validate", str(path), *extra, "--set", f"teacher.params.{typo}=1"], capsys)
    assert code == 2, out
    assert f"--set teacher.params.{typo}: teacher.params.{typo}: {typo} (did you mean {meant}?)" in out
    assert f"the {backend} backend" in out
    # Written in the recipe (here a step's own teacher), it is refused at its line, in run too.
    text = path.read_text().replace(
        "    prompt: prompts/label.jinja\n",
        f"    prompt: prompts/label.jinja\n    teacher: {{params: {{{typo}: 1}}}}\n",
    )
    line = text.splitlines().index(f"    teacher: {{params: {{{typo}: 1}}}}") + 1
    code, out = run_cli(["run", str(write(recipe_dir, text)), *extra], capsys)
    assert code == 2, out
    assert f"recipe.yaml:{line}: steps.1.teacher.params.{typo}: {typo} (did you mean {meant}?)" in out
    assert not (recipe_dir / "out").exists()


def test_openais_endpoint_refuses_any_other_param_and_a_server_takes_its_own(recipe_dir, capsys):
    path = write(recipe_dir, OPENAI_AT_OPENAI.format(prompt="prompts/label.jinja"))
    code, out = run_cli(["validate", str(path), "--set", "teacher.params.guided_json={}"], capsys)
    assert code == 2
    assert "teacher.params.guided_json: guided_json not supported by the openai backend; valid: audio," in out
    # vLLM's own params go to a vLLM server as they are; a typo of one of them does not.
    server = ["--set", "teacher.base_url=http://127.0.0.1:8000/v1"]
    for param in ("guided_json={}", "min_tokens=2", "top_k=5", "some_new_param=1"):
        code, out = run_cli(["validate", str(path), *server, "--set", f"teacher.params.{param}"], capsys)
        assert code == 0, out
    code, out = run_cli(["validate", str(path), *server, "--set", "teacher.params.guided_jsn={}"], capsys)
    assert code == 2 and "guided_jsn (did you mean guided_json?)" in out


def test_n_in_teacher_params_points_to_the_step_key(recipe_dir, capsys, listening_port):
    path = write(recipe_dir, GOOD.format(port=listening_port, prompt="prompts/label.jinja"))
    code, out = run_cli(["validate", str(path), "--set", "teacher.params.n=3"], capsys)
    assert code == 2
    assert "--set teacher.params.n: teacher.params.n: cannot be a teacher param: use the step's `n:`" in out


ONE_STEP = """\
name: t
teacher:
  backend: openai
  model: gpt-4o-mini
  api_key_env: SYNTHKD_TEST_KEY
  base_url: http://127.0.0.1:{port}/v1
  params: {params}
  timeout: 1
  max_attempts: 1
steps:
  - step: load
    path: seeds.jsonl
  - {step}
output:
  dir: out
"""


def one_step(recipe_dir: Path, port: int, step: str, params: str = "{}") -> Path:
    return write(recipe_dir, ONE_STEP.format(port=port, step=step, params=params))


def test_a_param_from_the_recipe_teacher_points_at_the_recipe_key(recipe_dir, capsys, listening_port):
    # The step's own teacher sets params too, but not the offending one.
    step = "step: label\n    teacher: {params: {temperature: 0}}"
    path = one_step(recipe_dir, listening_port, step, params="{n: 3}")
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert "recipe.yaml:7: teacher.params.n: cannot be a teacher param" in out


def test_judge_teacher_params_are_checked(recipe_dir, capsys, listening_port):
    step = "step: preference\n    judge_teacher: {model: judge, params: {stream: true}}"
    code, out = run_cli(["validate", str(one_step(recipe_dir, listening_port, step))], capsys)
    assert code == 2
    assert "recipe.yaml:14: steps.1.judge_teacher.params.stream: cannot be a teacher param" in out


@pytest.mark.parametrize("command", ["run", "validate"])
def test_judge_teacher_environment_is_preflighted(recipe_dir, capsys, listening_port, command):
    step = "step: preference\n    judge_teacher: {model: judge, api_key_env: SYNTHKD_NO_SUCH_KEY}"
    code, out = run_cli([command, str(one_step(recipe_dir, listening_port, step))], capsys)
    assert code == 2
    expected = "steps.1.judge_teacher.api_key_env: environment variable SYNTHKD_NO_SUCH_KEY is not set"
    assert f"recipe.yaml:14: {expected}" in out
    assert not (recipe_dir / "out").exists()


@pytest.mark.parametrize(
    ("step", "key", "column"),
    [
        ("step: judge\n    instruction_column: question", "instruction_column", "question"),
        (
            "step: judge\n    mode: pairwise\n    instruction_column: question",
            "instruction_column",
            "question",
        ),
        ("step: preference\n    candidate_columns: [student]", "candidate_columns", "student"),
        ("step: dialogue\n    persona_column: persona", "persona_column", "persona"),
    ],
)
def test_missing_column_errors_name_the_key_to_change(recipe_dir, capsys, listening_port, step, key, column):
    if "judge" in step:
        (recipe_dir / "seeds.jsonl").write_text(
            '{"instruction": "Say hi.", "response": "Hi.", "response_a": "a", "response_b": "b"}\n'
        )
    code, out = run_cli(["validate", str(one_step(recipe_dir, listening_port, step))], capsys)
    assert code == 2
    assert f"steps.1.{key}: " in out and f"needs column(s) {column}" in out


def test_label_schema_path_resolves_like_every_recipe_path(recipe_dir, capsys, listening_port, monkeypatch):
    home = recipe_dir / "home"
    (home / "schemas").mkdir(parents=True)
    (home / "schemas" / "answer.json").write_text('{"type": "object"}')
    monkeypatch.setenv("HOME", str(home))
    path = one_step(recipe_dir, listening_port, "step: label\n    schema: ~/schemas/answer.json")
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
    path = one_step(recipe_dir, listening_port, "step: label\n    schema: missing.json")
    code, out = run_cli(["validate", str(path)], capsys)
    assert code == 2
    expected = f"JSON schema file not found: missing.json (looked in the recipe's folder ({recipe_dir})"
    assert f"steps.1.schema: {expected}" in out


@pytest.mark.parametrize(
    ("section", "where"),
    [
        ("  - step: preference\n    judge_teacher: {model: judge, modle: x}", "steps.3.judge_teacher.modle"),
        ("train:\n  student: embedded\n  judge: {model: judge, modle: x}", "train.judge.modle"),
        (
            "train:\n  student: embedded\n  method: distill\n  teacher: {model: t, modle: x}",
            "train.teacher.modle",
        ),
    ],
)
def test_a_typo_under_any_teacher_key_lists_the_teacher_keys(
    recipe_dir, capsys, listening_port, section, where
):
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja").replace(
        "output:", f"{section}\noutput:"
    )
    code, out = run_cli(["validate", str(write(recipe_dir, text))], capsys)
    assert code == 2, out
    assert (
        f"{where}: unknown key 'modle' (did you mean 'model'?); valid keys: backend, model, base_url," in out
    )


def test_a_missing_key_of_the_training_judge_stops_the_run_before_any_request(
    recipe_dir, capsys, listening_port
):
    judge = "train:\n  student: embedded\n  judge: {model: judge, api_key_env: SYNTHKD_NO_SUCH_KEY}\noutput:"
    text = GOOD.format(port=listening_port, prompt="prompts/label.jinja").replace("output:", judge)
    path = write(recipe_dir, text)
    code, out = run_cli(["run", str(path)], capsys)
    assert code == 2
    expected = "train.judge.api_key_env: environment variable SYNTHKD_NO_SUCH_KEY is not set"
    assert f"recipe.yaml:{text.splitlines().index('train:') + 3}: {expected}" in out
    # The teacher's endpoint accepts connections but never answers: had a request been sent, the
    # run would have hung; it stopped before writing anything.
    assert not (recipe_dir / "out").exists()
    # Without training the judge is not needed, and `synthkd train` asks for it before training.
    code, out = run_cli(["train", str(path)], capsys)
    assert code == 2 and expected in out
