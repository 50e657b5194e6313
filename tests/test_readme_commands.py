"""The README's commands run as written.

Every fenced block of README.md and docs/*.md names its language. A ```bash or ```sh block is a
command block: it is run, in order, in a copy of the checkout (so `runs/` lands in a temporary
folder), unless the line just before it says why not: `<!-- not run: needs an API key -->`. A
command block with neither fails here, so a new example is either tested or says why it cannot be.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_LANGUAGES = {"bash", "sh"}
FENCE = re.compile(r"^```(?P<language>[^`\n]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not run:(?P<reason>.*?)-->")
# Top-level entries of the checkout a block's copy leaves out: what runs write, and git's own.
NOT_COPIED = {"runs", ".git"}
BLOCK_TIMEOUT_S = 900  # make quickstart: about 2 minutes on 2 idle cores, far more on a busy one


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    not_run: str | None  # the reason given, or None: the block runs

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in COMMAND_LANGUAGES and self.not_run is None


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        reason = NOT_RUN.fullmatch(before.strip())
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                language=match["language"].strip(),
                code=match["code"],
                not_run=reason["reason"].strip() if reason else None,
            )
        )
    return found


def test_every_block_is_run_or_says_why_not():
    problems = []
    for page in PAGES:
        for block in blocks(page):
            if not block.language:
                problems.append(f"{block.where}: a block without a language (```bash, ```yaml, ```text, ...)")
            elif block.not_run == "":
                problems.append(f"{block.where}: `not run:` without a reason")
            elif block.not_run is not None and block.language not in COMMAND_LANGUAGES:
                problems.append(
                    f"{block.where}: `not run:` on a ```{block.language} block, which is never run"
                )
    assert not problems, "\n".join(problems)
    readme = blocks(ROOT / "README.md")
    assert any(block.runs and "make quickstart" in block.code for block in readme)
    assert all(block.not_run for block in readme if "make test" in block.code)  # this suite is make test


def test_the_parser_sees_a_block_without_a_reason(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- not run: needs a key -->\n```bash\nsynthkd run x.yaml\n```\n\n"
        "```sh\nsynthkd recipes\n```\n",
        encoding="utf-8",
    )
    first, second = blocks(page)
    assert (first.not_run, first.runs, first.line) == ("needs a key", False, 4)
    assert (second.not_run, second.runs, second.code) == (None, True, "synthkd recipes\n")


def _checkout_copy(tmp_path: Path) -> Path:
    """The checkout, each top-level entry linked, without runs/: blocks write there as in a clone."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in NOT_COPIED:
            (copy / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return copy


def _run_blocks(page: Path, tmp_path: Path) -> Path:
    runnable = [block for block in blocks(page) if block.runs]
    checkout = _checkout_copy(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if any(re.search(r"^\s*make\b", block.code, re.MULTILINE) for block in runnable):
        # A make target would otherwise install first; `make test` has set up the venv before this runs.
        stale = subprocess.run(["make", "-q", "setup"], cwd=checkout, env=env, capture_output=True)
        assert stale.returncode == 0, "the venv is older than pyproject.toml: run `make setup` first"
    for block in runnable:
        # A session of its own, ended after the block: a server a block started in the background
        # does not outlive it, even when the block fails before stopping it.
        shell = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", block.code],
            cwd=checkout,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = shell.communicate(timeout=BLOCK_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        assert shell.returncode == 0, (
            f"{block.where} exited {shell.returncode}:\n{block.code}\n{output[-3000:]}"
        )
    return checkout


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path: Path):
    checkout = _run_blocks(ROOT / "README.md", tmp_path)
    run = checkout / "runs" / "quickstart"
    for made in ("dataset", "data.jsonl", "manifest.json", "README.md", "report.html", "student"):
        assert (run / made).exists(), f"make quickstart did not write {made}"
    assert (run / "push-dry-run" / "README.md").is_file()  # push --dry-run wrote its folder
    assert (checkout / "my-recipe" / "quickstart.yaml").is_file()  # init made a copy to edit


DOCS_WITH_COMMANDS = [page for page in PAGES[1:] if any(block.runs for block in blocks(page))]


@pytest.mark.parametrize("page", DOCS_WITH_COMMANDS, ids=[page.name for page in DOCS_WITH_COMMANDS])
def test_the_docs_commands_run_as_written(page: Path, tmp_path: Path):
    _run_blocks(page, tmp_path)
