"""notebooks/quickstart.ipynb runs from top to bottom (nbclient), so it never rots."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

import synthkd

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_the_notebook_uses_only_the_public_api():
    """What `import synthkd` offers, nothing reached for inside the package."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "import synthkd\n" in code
    assert not re.findall(r"(?:from|import) synthkd\.\w+", code)
    used = set(re.findall(r"\bsynthkd\.(\w+)", code))
    assert used and used <= set(synthkd.__all__), used - set(synthkd.__all__)


def test_quickstart_notebook_executes(tmp_path: Path, private_cache: Path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel starts in tmp_path (its runs/ folder goes there) and inherits this test's environment:
    # offline, and the private request cache. Its models folder starts empty, as on a user's first
    # run: the embedded model is converted under the notebook's live progress display, which
    # once recursed through rich's stderr proxy until the run died.
    models = private_cache / "models"
    models.unlink()
    models.mkdir()
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    run_dir = tmp_path / "runs" / "quickstart-notebook"
    for name in ("dataset", "data.jsonl", "manifest.json", "README.md", "recipe.yaml", "report.html"):
        assert (run_dir / name).exists(), name
    assert re.search(r"\b[1-8] rows -> runs/quickstart-notebook", outputs)
    assert "perplexity" in outputs and "agreement" in outputs  # the before/after table
    assert (run_dir / "student" / "eval.json").exists()
