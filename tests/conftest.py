"""Test environment: offline, a private cache per test, and helpers to write recipes."""

from __future__ import annotations

import os
import socket

# Set before anything imports huggingface_hub or litellm: no test may touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The embedded model is converted once (about 20 s) and kept here for the whole session, while the
# request cache is private to each test.
SESSION_MODELS = Path(os.environ.get("SYNTHKD_TEST_MODELS", "/tmp/synthkd-test-models"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("SYNTHKD_CACHE_DIR", str(cache_dir))
    models = cache_dir / "models"
    SESSION_MODELS.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir()
    models.symlink_to(SESSION_MODELS, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return cache_dir


@pytest.fixture
def listening_port():
    """A port with something listening, so the base_url preflight passes without a server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
