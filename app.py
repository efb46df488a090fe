"""Crowd-SFT entry point (`make run`, the Docker image's CMD): settings from the environment,
migrate the database, load the base model once, start the generation scheduler and the round
worker, build the UI and serve it.

A bad setting prints one line naming the environment variable and exits with status 2.
"""

from __future__ import annotations

import logging
import sys

from crowd.config import ConfigError, Settings, check_data_dir, load_settings

log = logging.getLogger("crowd.app")

QUEUE_THREADS = 64  # Gradio worker threads: every streaming chat holds one while it waits


def build(settings: Settings):
    """Everything but the web server: (Gradio Blocks, service, worker or None)."""
    from crowd.campaigns import utcnow
    from crowd.generation import GenerationService
    from crowd.models import load_base
    from crowd.organizer import Organizer
    from crowd.service import CrowdService
    from crowd.ui import build_app
    from crowd.vllm_engine import VLLMGeneration
    from storage.db import migrate

    migrate(settings.db_path)
    if settings.model.threads:
        import torch

        torch.set_num_threads(settings.model.threads)
    generation: GenerationService | VLLMGeneration
    if settings.model.serving == "vllm":  # replies from the operator's vLLM server
        generation = VLLMGeneration(settings.model)
    else:
        loaded = load_base(settings.model.base_model, settings.models_dir, settings.model.device)
        generation = GenerationService(loaded, settings.model)
    service = CrowdService(settings, generation)
    worker = None
    if settings.start_worker:
        from crowd.rounds.engine import build_engine
        from crowd.rounds.worker import Worker

        worker = Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow).start()
    return build_app(service, Organizer(service)), service, worker


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = load_settings()
        check_data_dir(settings.data_dir)
    except ConfigError as exc:
        print(f"crowd: {exc}", file=sys.stderr)
        return 2
    from crowd.models import ModelError
    from storage.db import StorageError

    try:
        demo, _, _ = build(settings)
    except (ModelError, StorageError) as exc:
        print(f"crowd: {exc}", file=sys.stderr)
        return 2
    from crowd.sync import start_sync
    from crowd.ui import launch_options

    start_sync(settings)
    if not settings.organizer_secret and not settings.organizer_hf_org:
        log.info("organizer view locked: set CROWD_ORGANIZER_SECRET to open /organizer")
    demo.queue(default_concurrency_limit=None).launch(
        server_name=settings.host,
        server_port=settings.port,
        max_threads=QUEUE_THREADS,
        **launch_options(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
