"""Shared fixtures: a tiny Llama-style model with the real SmolLM2 tokenizer (and the real
default model), each loaded once per run; generation services on private copies of them; a
migrated database in a real SQLite file; settings pointing at a temporary data dir, with the
organizer's key (tests/apps.py's KEY, the one every test uses); and one round's world (service,
organizer, worker), as sqlite-utils shares its `fresh_db` across its test files."""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from crowd.config import ModelSettings, Settings, TrainingSettings
from storage.db import migrate
from tests.apps import KEY

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


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir, tmp_path_factory):
    """The tiny model loaded once per run. Adapters load into the model they are given, so
    tests get private copies of it (`loaded`, `new_generation`), never this one."""
    from crowd.models import load_base

    return load_base(str(tiny_model_dir), tmp_path_factory.mktemp("models"), device="cpu")


@pytest.fixture(scope="session")
def default_model(default_model_dir):
    """The real default model (SmolLM2-135M-Instruct) loaded once per run; tests get copies."""
    from crowd.models import load_base

    return load_base(str(default_model_dir), default_model_dir.parent, device="cpu")


def private_copy(model):
    """A copy of a loaded model for one test's adapters (the tiny one's: milliseconds); the
    tokenizer is shared (it is only read)."""
    return replace(model, model=copy.deepcopy(model.model))


@pytest.fixture(scope="module")
def loaded(tiny_model):
    """The tiny model for one test module, a copy of the run's (real tokenizer, real weights)."""
    return private_copy(tiny_model)


@pytest.fixture
def fresh_model(tiny_model):
    """The tiny model for one test alone (an evaluator's adapters load into it)."""
    return private_copy(tiny_model)


@pytest.fixture(scope="session")
def new_generation(tiny_model) -> Iterator[Callable]:
    """Make a GenerationService on a private copy of a loaded model (default: the tiny one),
    with ModelSettings' `fields` (greedy unless `temperature` is given):
    `new_generation(max_new_tokens=6)`; `idle_exit_s` as GenerationService's. What a test
    leaves open is closed at the end."""
    from crowd.serving.generation import IDLE_EXIT_S, GenerationService

    made: weakref.WeakSet = weakref.WeakSet()

    def make(model=None, idle_exit_s: float = IDLE_EXIT_S, **fields) -> GenerationService:
        fields.setdefault("temperature", 0.0)
        copied, settings = private_copy(model or tiny_model), ModelSettings(**fields)
        service = GenerationService(copied, settings, idle_exit_s=idle_exit_s)
        made.add(service)
        return service

    yield make
    for service in list(made):
        service.close()


def tiny_settings(data_dir: Path, tiny_model_dir: Path, **fields) -> Settings:
    """Settings for `data_dir`, on the tiny model, with small training budgets (and `fields`
    replaced): the `settings` fixture's, for fixtures of a wider scope too."""
    return Settings(
        data_dir=data_dir,
        n_groups=3,
        model=ModelSettings(base_model=str(tiny_model_dir), device="cpu", max_new_tokens=12),
        training=TrainingSettings(epochs=1, batch_size=4, max_length=128, learning_rate=1e-3),
        organizer_secret=KEY,
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


@pytest.fixture
def round_world(settings, new_generation):
    """Service, organizer and worker over one data dir, on the tiny model (greedy replies) and
    the round's mechanics as they were before peer review (no reviews, no per-person cap) and
    before issue 28's candidates and judge (one candidate per group, the fixed judge):
    tests/test_review.py and tests/test_candidates.py turn those on where they test them."""
    from crowd.campaigns import utcnow
    from crowd.limits import Limits
    from crowd.organizer import Organizer
    from crowd.rounds.engine import build_engine
    from crowd.rounds.worker import Worker
    from crowd.service import CrowdService
    from tests.rounds import ONE_PER_GROUP

    settings = replace(settings, eval_samples=4)
    generation = new_generation(max_new_tokens=6)
    limits = Limits(chats_per_minute=1000, submissions_per_minute=1000)
    service = CrowdService(settings, generation, limits=limits)
    organizer = Organizer(service)
    organizer.update_campaign(KEY, reviews_on=False, person_cap=1.0, **ONE_PER_GROUP)
    worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow)
    yield service, organizer, worker
    generation.close()
