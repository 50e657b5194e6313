"""A shared recipe's templates cannot run code or read files: they render in Jinja's sandbox, and
`{% include %}` reads only from the recipe's folder and the shipped prompts. What is refused is one
clear error naming the template, exit code 2, in `validate` and in `run --dry-run` alike."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import run_cli, write_jsonl

RECIPE = """\
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
    prompt: ask.jinja
output:
  dir: out
"""


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe whose label prompt is `ask.jinja` (each test writes it), with a teacher that only
    listens: nothing is ever answered, so nothing could be sent and used."""
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": "Say hi."}, {"instruction": "Name a colour."}])
    monkeypatch.setenv("SYNTHKD_TEST_KEY", "sk-test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        path = tmp_path / "recipe.yaml"
        path.write_text(RECIPE.format(port=sock.getsockname()[1]))
        yield path


def one_error(out: str) -> str:
    """The output is one `error:` line, no traceback."""
    assert out.count("error:") == 1 and "Traceback" not in out, out
    return out


def payload(marker: Path) -> str:
    return '{{ cycler.__init__.__globals__.os.popen("touch ' + str(marker) + '").read() }}'


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_code_in_a_template_is_refused_not_run(recipe, capsys, tmp_path, command):
    marker = tmp_path / "PWNED_popen"
    (tmp_path / "ask.jinja").write_text("Answer: {{ instruction }}\n" + payload(marker) + "\n")
    code, out = run_cli([*command, str(recipe)], capsys)
    assert code == 2, out
    assert not marker.exists()
    one_error(out)
    assert f"{tmp_path / 'ask.jinja'}:2" in out  # the template and the line
    assert "refused by the sandbox" in out and "'__init__'" in out
    assert not (tmp_path / "out").exists()


def test_unsafe_name_built_at_run_time_is_refused_when_rendering(recipe, capsys, tmp_path):
    marker = tmp_path / "PWNED_built"
    template = (
        '{% set init = "__in" ~ "it__" %}{% set glob = "__glob" ~ "als__" %}'
        '{{ (cycler|attr(init)|attr(glob)).os.popen("touch ' + str(marker) + '").read() }}'
    )
    (tmp_path / "ask.jinja").write_text("{{ instruction }}\n" + template)
    code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    assert code == 2, out
    assert not marker.exists()
    one_error(out)
    assert str(tmp_path / "ask.jinja") in out and "refused by the sandbox" in out and "unsafe" in out


def test_a_template_cannot_change_the_rows(recipe, capsys, tmp_path):
    (tmp_path / "ask.jinja").write_text("{% set _ = instruction_list.append(1) %}{{ instruction }}")
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "hi", "instruction_list": [0]}\n')
    code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    assert code == 2, out
    one_error(out)
    assert "refused by the sandbox" in out and "append" in out


def test_include_from_the_recipe_folder_renders(recipe, capsys, tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "rules.jinja").write_text("Rules for {{ instruction }}: be brief.")
    (tmp_path / "ask.jinja").write_text('{% include "parts/rules.jinja" %}\nTask: {{ instruction }}')
    code, out = run_cli(["validate", str(recipe)], capsys)
    assert code == 0, out
    code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    assert code == 0, out
    assert "Rules for Say hi.: be brief. Task: Say hi." in out


def test_include_of_a_shipped_prompt_renders(recipe, capsys, tmp_path):
    (tmp_path / "ask.jinja").write_text('{% include "prompts/label.jinja" %}\n(keep it short)')
    code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    assert code == 0, out
    assert "Say hi." in out and "(keep it short)" in out


def test_include_needs_columns_like_the_template(recipe, capsys, tmp_path):
    (tmp_path / "part.jinja").write_text("{{ topic }}")
    (tmp_path / "ask.jinja").write_text('{{ instruction }} {% include "part.jinja" %}')
    code, out = run_cli(["validate", str(recipe)], capsys)
    assert code == 2, out
    assert "template ask.jinja needs column(s) topic" in one_error(out)


@pytest.mark.parametrize(
    "name, why",
    [
        ("../../../../../../etc/passwd", "is a path outside the recipe folder"),
        ("/etc/passwd", "is an absolute path"),
    ],
)
@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_include_outside_the_recipe_folder_is_refused(recipe, capsys, tmp_path, command, name, why):
    (tmp_path / "ask.jinja").write_text("{{ instruction }}\n{% include '" + name + "' %}")
    code, out = run_cli([*command, str(recipe)], capsys)
    assert code == 2, out
    one_error(out)
    assert str(tmp_path / "ask.jinja") in out
    assert f"include refused: '{name}' {why}" in out
    assert "root:" not in out


def test_include_through_a_link_out_of_the_folder_is_refused(recipe, capsys, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("SECRET")
    (tmp_path / "secret.jinja").symlink_to(outside)
    (tmp_path / "ask.jinja").write_text('{{ instruction }} {% include "secret.jinja" %}')
    try:
        code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    finally:
        outside.unlink()
    assert code == 2, out
    assert "include refused: 'secret.jinja' is a link to" in one_error(out)
    assert "SECRET" not in out


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_missing_include_is_one_clear_error(recipe, capsys, tmp_path, command):
    (tmp_path / "ask.jinja").write_text('{{ instruction }}\n{% include "nope.jinja" %}')
    code, out = run_cli([*command, str(recipe)], capsys)
    assert code == 2, out
    one_error(out)
    assert f"{tmp_path / 'ask.jinja'}: include not found: 'nope.jinja'" in out


def test_include_built_at_run_time_is_checked_when_rendering(recipe, capsys, tmp_path):
    (tmp_path / "ask.jinja").write_text('{{ instruction }} {% include "../" ~ "secret.jinja" %}')
    code, out = run_cli(["run", "--dry-run", str(recipe)], capsys)
    assert code == 2, out
    assert "include refused: '../secret.jinja'" in one_error(out)


def test_template_lists_what_it_includes(tmp_path):
    from synthkd.templates import load_template

    (tmp_path / "part.jinja").write_text("{{ topic }}{% set shown = 1 %}")
    (tmp_path / "ask.jinja").write_text('{% set note = "x" %}{{ instruction }} {% include "part.jinja" %}')
    template = load_template("ask.jinja", tmp_path, "here")
    assert template.variables == {"instruction", "topic"}
    part = str(tmp_path.resolve() / "part.jinja")
    assert template.included_sources == {part: "{{ topic }}{% set shown = 1 %}"}
    assert template.render({"instruction": "a", "topic": "b"}) == "a b"
