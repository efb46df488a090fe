"""Settings: frozen dataclasses built from the environment. The one place that reads os.environ.

Each setting is declared once, as a dataclass field made by `setting(...)`
(`crowd.setting_fields`): its environment variable, default, range (or choices) and help text.
`load_settings` reads and validates the environment from those fields, and
`crowd.cli.settings` renders the README's table from them (a test keeps the two in step), as
TRL declares each option once with its help text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crowd.model_settings import MAX_AUTO_EPOCHS, PACKAGED_MODEL, ModelSettings, TrainingSettings
from crowd.network import PROXIES_RANGE, SPACES, Network, parse_proxies
from crowd.setting_fields import (
    ConfigError,
    Parse,
    declared_in,
    folder_path,
    from_env,
    http_url,
    int_in,
    jobs_flavor,
    local_path,
    one_of,
    replica_place,
    repo_id,
    secret,
    setting,
    yes_no,
)
from storage.replica_store import DEFAULT_REGION, S3Location
from storage.vocabulary import MAX_GROUPS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The project's own small files: CSS, copy, seed prompts and sentences."""

# The model's and training's settings are imported from here by most modules, with the rest.
__all__ = ["ASSETS", "MAX_AUTO_EPOCHS", "PACKAGED_MODEL", "ConfigError", "ModelSettings"]
__all__ += ["TrainingSettings", "Settings", "load_settings", "declared", "check_data_dir"]


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(
        "CROWD_DATA_DIR",
        Path("data"),
        "database, adapters, converted model",
        local_path,
        shown="./data",
    )
    n_groups: int = setting("CROWD_GROUPS", 3, "groups in a new campaign", int_in(1, MAX_GROUPS))
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    organizer_secret: str | None = setting(
        "CROWD_ORGANIZER_SECRET",
        None,
        "unlocks the organizer view; unset = view off",
        secret(16),
        secret=True,
    )
    organizer_hf_org: str | None = setting(
        "CROWD_ORGANIZER_HF_ORG", None, "on Spaces: members of this HF organisation organize"
    )
    host: str = setting(
        ("CROWD_HOST", "GRADIO_SERVER_NAME"), "127.0.0.1", "address the app listens on"
    )
    port: int = setting(
        ("CROWD_PORT", "GRADIO_SERVER_PORT"),
        7860,
        "port the app listens on",
        int_in(1, 65535),
    )
    trusted_proxies: tuple[Network, ...] = setting(
        "CROWD_TRUSTED_PROXIES",
        (),
        "reverse proxies whose `X-Forwarded-For` hop is believed, comma-separated; `spaces` = "
        "the Hugging Face Spaces proxy; unset = the socket's peer is the client",
        Parse(parse_proxies, PROXIES_RANGE),
        shown="unset; `spaces` on a Space",
    )
    joins_per_hour: int = setting(
        "CROWD_JOINS_PER_HOUR",
        20,
        "new volunteers per network (a /24, or a /56 for IPv6) per hour; a venue the organizer "
        "declares (a classroom) is exempt; 0 = no limit",
        int_in(0, 1_000_000),
    )
    start_worker: bool = setting(
        "CROWD_WORKER", True, "run the round worker in this process", yes_no
    )
    worker_nice: int = setting(
        "CROWD_WORKER_NICE",
        10,
        "how far below the replies the round worker's CPU priority is (Linux nice, per thread): "
        "a round that trains beside the chat takes the CPU the replies leave; 0 = equal",
        int_in(0, 19),
    )
    job_idle_class: bool = setting(
        "CROWD_JOB_IDLE_CLASS",
        True,
        "`process` runner: the round's child runs in Linux's idle scheduling class, taking only "
        "the CPU the replies leave (a round on a CPU that chats without pause waits for a "
        "pause); 0 = at CROWD_WORKER_NICE",
        yes_no,
    )
    round_runner: str = setting(
        "CROWD_ROUND_RUNNER",
        "thread",
        "where a round trains and is judged: `thread` (in the app, below the replies' priority),"
        " `process` (a child process below the replies: a crash fails the job, not the app),"
        " `hf-jobs` (a Hugging Face Job on `CROWD_JOB_FLAVOR`, the Space's image; docs/deploy.md)",
        one_of("thread", "process", "hf-jobs"),
    )
    job_flavor: str = setting(
        "CROWD_JOB_FLAVOR",
        "t4-small",
        "hf-jobs: the hardware a round rents (`hf jobs hardware` lists them)",
        jobs_flavor,
    )
    job_timeout_s: int = setting(
        "CROWD_JOB_TIMEOUT_S",
        3600,
        "process and hf-jobs: seconds a round job may run before it is stopped and retried",
        int_in(60, 7 * 86400),
    )
    job_image: str | None = setting(
        "CROWD_JOB_IMAGE",
        None,
        "hf-jobs: the image a round runs in; unset = this Space's own (`hf.co/spaces/$SPACE_ID`)",
    )
    job_bucket: str | None = setting(
        "CROWD_JOB_BUCKET",
        None,
        "hf-jobs: the storage bucket that carries bundles and results, mounted into the job",
        repo_id,
    )
    job_dir: Path | None = setting(
        "CROWD_JOB_DIR",
        None,
        "hf-jobs: where this app sees that bucket (its mount); unset = `CROWD_REPLICA` when that is"
        " a folder (the bucket's mount); round jobs use its folder round-jobs/",
        folder_path,
    )
    scorer: str = setting(
        "CROWD_SCORER",
        "default",
        "emotion scorer: `default` (offline), `hub:<model id>`, or a saved head (.npz)",
    )
    eval_samples: int = setting(
        "CROWD_EVAL_SAMPLES",
        24,
        "replies sampled per model when judging an emotion round",
        int_in(1, 10_000),
    )
    hf_token: str | None = setting(
        ("CROWD_HF_TOKEN", "HF_TOKEN"),
        None,
        "a write token, for pushed backups and `export-model --push-to-hub`",
        secret=True,
    )
    backup_repo: str | None = setting(
        "CROWD_BACKUP_REPO",
        None,
        "private HF dataset repo for pushed backups; unset = off",
        repo_id,
    )
    backup_every_s: int = setting(
        "CROWD_BACKUP_EVERY_S",
        3600,
        "seconds between pushes to the backup repo",
        int_in(60, 7 * 86400),
    )

    identity_secret: str | None = setting(
        "CROWD_IDENTITY_SECRET",
        None,
        "signs volunteers' tokens; unset = a key file in the data dir (set it on a Space, so a"
        " recovery keeps every token valid)",
        secret(32),
        secret=True,
    )
    backup_key: str | None = setting(
        "CROWD_BACKUP_KEY",
        None,
        "signs and checks backup manifests; unset = the identity secret (or key file)",
        secret(32),
        secret=True,
    )
    replica: Path | S3Location | None = setting(
        "CROWD_REPLICA",
        None,
        "where Litestream streams the database to, with the adapters and the key file: a folder"
        " (e.g. a storage bucket's mount) or `s3://BUCKET/PATH` (any S3-compatible store, e.g."
        " a Hugging Face bucket through `CROWD_S3_ENDPOINT`); the app restores from it when the"
        " local database is missing; unset = off",
        replica_place,
    )
    s3_endpoint: str | None = setting(
        "CROWD_S3_ENDPOINT",
        None,
        "the S3-compatible store of an `s3://` replica, e.g. `https://s3.hf.co/<namespace>`;"
        " unset = AWS S3",
        http_url,
    )
    aws_access_key_id: str | None = setting(
        "AWS_ACCESS_KEY_ID", None, "the access key of an `s3://` replica", secret=True
    )
    aws_secret_access_key: str | None = setting(
        "AWS_SECRET_ACCESS_KEY", None, "the secret key of an `s3://` replica", secret=True
    )
    aws_region: str = setting(
        ("AWS_REGION", "AWS_DEFAULT_REGION"),
        DEFAULT_REGION,
        "the region of an `s3://` replica (Hugging Face's gateway: us-east-1)",
    )
    replica_sync_ms: int = setting(
        "CROWD_REPLICA_SYNC_MS",
        1000,
        "how often Litestream looks for new commits and ships them to the replica (ms)",
        int_in(100, 60_000),
    )
    replica_check_s: int = setting(
        "CROWD_REPLICA_CHECK_S",
        300,
        "how often the replica is restored into a temporary file and checked, so a replica"
        " that no longer restores shows on the organizer page (s)",
        int_in(10, 86_400),
    )
    models_cache: Path | None = setting(
        "CROWD_MODELS_DIR",
        None,
        "where converted base models are kept (the Space image converts the default one at build"
        " time into /home/user/models); unset = the data dir's models/",
        local_path,
    )
    max_upload_mb: int = setting(
        "CROWD_MAX_UPLOAD_MB",
        5,
        "the largest file a visitor may upload (MB)",
        int_in(1, 1024),
    )
    uploads_per_minute: int = setting(
        "CROWD_UPLOADS_PER_MINUTE",
        10,
        "uploads per network address per minute (only organizers upload: reference rows)",
        int_in(1, 10_000),
    )
    max_request_kb: int = setting(
        "CROWD_MAX_REQUEST_KB",
        1024,
        "the largest request body other than an upload (KB); larger ones are refused (413)"
        " before they are read",
        int_in(64, 1_048_576),
    )
    upload_ttl_s: int = setting(
        "CROWD_UPLOAD_TTL_S",
        3600,
        "uploaded and generated files are deleted after this many seconds",
        int_in(60, 7 * 86400),
    )

    def __post_init__(self) -> None:
        if isinstance(self.replica, S3Location) and not (
            self.aws_access_key_id and self.aws_secret_access_key
        ):
            raise ConfigError(
                f"CROWD_REPLICA={self.replica} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                " (on Hugging Face: the S3 keys generated for a write token)"
            )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "crowd.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def models_dir(self) -> Path:
        """Converted base models (the GGUF, as safetensors) are cached here."""
        return self.models_cache or self.data_dir / "models"


# --- reading and documenting ------------------------------------------------------------------


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ). Raises ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    return _on_a_space(from_env(Settings, env), env)


def _on_a_space(settings: Settings, env: Mapping[str, str]) -> Settings:
    """On a Space (SPACE_ID set) every visitor arrives through the platform's proxy: unless
    CROWD_TRUSTED_PROXIES says otherwise, believe its hop, or all would share one address. And a
    round job on Hugging Face Jobs runs the Space's own image unless CROWD_JOB_IMAGE says."""
    if env.get("SPACE_ID") and not env.get("CROWD_TRUSTED_PROXIES", "").strip():
        settings = replace(settings, trusted_proxies=parse_proxies(SPACES))
    if env.get("SPACE_ID") and settings.job_image is None:  # a round job runs the Space's image
        settings = replace(settings, job_image=f"hf.co/spaces/{env['SPACE_ID']}")
    return settings


def declared(cls: type = Settings) -> Iterator[tuple[str, Any, dict]]:
    """(field name, default, metadata) of every setting read from the environment, in order."""
    return declared_in(cls)


def check_data_dir(path: Path) -> None:
    """Create the data dir if needed and prove it is writable, or raise ConfigError naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"CROWD_DATA_DIR={str(path)!r} is not writable: {exc}") from None
