"""Push a trained student to the Hub: the saved folder (weights, tokenizer, card, eval.json) as one
commit of a model repository. The dataset's push (`publish.push`) stages and scans a run; a student's
folder is already exactly what is uploaded."""

from __future__ import annotations

import os
from pathlib import Path


def push_student(output_dir: Path, repo_id: str, run_name: str) -> str:
    """Create the model repository if needed and upload the student's folder; returns the commit."""
    from huggingface_hub import HfApi

    # HF_ENDPOINT is read here, not when huggingface_hub was imported, so a late setting counts.
    # The token is huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`).
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(output_dir),
        commit_message=f"synthkd: student of the {run_name} run",
    )
    return str(commit)
