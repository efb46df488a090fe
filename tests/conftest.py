"""Shared fixtures: a tiny Llama-style model with the real SmolLM2 tokenizer, a migrated
database in a real SQLite file, and settings pointing at a temporary data dir."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from crowd.config import ModelSettings, Settings, TrainingSettings
from storage.db import migrate

# Tests never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CACHE = Path(__file__).resolve().parent.parent / ".venv" / "test-cache"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A 3M-parameter Llama (2 layers) saved with the real SmolLM2 tokenizer; built once."""
    from crowd.models import build_tiny_model

    CACHE.mkdir(parents=True, exist_ok=True)
    return build_tiny_model(CACHE / "tiny-llama")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model (SmolLM2-135M-Instruct), converted from the packaged GGUF once."""
    from crowd.models import convert_packaged_model

    CACHE.mkdir(parents=True, exist_ok=True)
    return convert_packaged_model(CACHE / "models")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tmp_path_factory):
    """The tiny model loaded once per test module (real tokenizer, real weights)."""
    from crowd.models import load_base

    return load_base(str(tiny_model_dir), tmp_path_factory.mktemp("models"), device="cpu")


def tiny_settings(data_dir: Path, tiny_model_dir: Path, **fields) -> Settings:
    """Settings for `data_dir`, on the tiny model, with small training budgets (and `fields`
    replaced): the `settings` fixture's, for fixtures of a wider scope too."""
    return Settings(
        data_dir=data_dir,
        n_groups=3,
        model=ModelSettings(base_model=str(tiny_model_dir), device="cpu", max_new_tokens=12),
        training=TrainingSettings(epochs=1, batch_size=4, max_length=128, learning_rate=1e-3),
        organizer_secret="organizer-test-secret",
        start_worker=False,
        **fields,
    )


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    """Settings for a fresh data dir, on the tiny model, with small training budgets."""
    return tiny_settings(tmp_path / "data", tiny_model_dir)


@pytest.fixture
def db_path(settings: Settings) -> Path:
    """A migrated database in a real SQLite file."""
    migrate(settings.db_path)
    return settings.db_path


@pytest.fixture
def with_settings():
    """Derive settings with some fields replaced: with_settings(settings, n_groups=4)."""
    return replace
