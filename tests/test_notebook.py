"""notebooks/quickstart.ipynb runs from top to bottom (nbclient), so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path: Path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel starts in tmp_path (its runs/ folder goes there) and inherits this test's environment:
    # offline, and the private request cache with the converted embedded model.
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
    assert "8 rows" in outputs or "rows, 0 failures" in outputs
    assert "perplexity" in outputs and "agreement" in outputs  # the before/after table
    assert (run_dir / "student" / "eval.json").exists()
