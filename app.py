"""Crowd-SFT entry point (`make run`, the Docker image's CMD): settings from the environment,
restore from the replica when the local database is missing, migrate the database, start
replicating, load the base model once, start the generation scheduler and the round worker,
build the UI and serve it. SIGTERM (what a Space restart sends) stops the server, then flushes
the replica before the process exits.

A bad setting prints one line naming the environment variable and exits with status 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from crowd.config import ConfigError, Settings, check_data_dir, load_settings

log = logging.getLogger("crowd.app")

QUEUE_THREADS = 64  # Gradio worker threads: every streaming chat holds one while it waits


def build(settings: Settings, on_migrated=lambda: None):
    """Everything but the web server: (Gradio Blocks, service, worker or None). The model
    loads in the background (the page says it is warming up); a wrong model folder or device
    still stops start-up at once. `on_migrated` runs once the database is migrated."""
    from crowd.campaigns import utcnow
    from crowd.config import PACKAGED_MODEL
    from crowd.models import load_base, pick_device, resolve_base_model
    from crowd.organizer import Organizer
    from crowd.service import CrowdService
    from crowd.serving.generation import GenerationService
    from crowd.serving.protocol import Generation
    from crowd.serving.vllm_engine import VLLMGeneration
    from crowd.ui import build_app
    from storage.db import migrate

    migrate(settings.db_path)
    on_migrated()
    if settings.model.threads:
        import torch

        torch.set_num_threads(settings.model.threads)
    from crowd.serving.warmup import WarmingGeneration

    generation: Generation
    if settings.model.serving == "vllm":  # replies from the operator's vLLM server
        generation = VLLMGeneration(settings.model)
    else:
        if settings.model.base_model != PACKAGED_MODEL:  # quick: a folder's config.json, a Hub id
            resolve_base_model(settings.model.base_model, settings.models_dir)
        device = pick_device(settings.model.device)
        generation = WarmingGeneration(
            lambda: GenerationService(
                load_base(settings.model.base_model, settings.models_dir, device), settings.model
            )
        )
    service = CrowdService(settings, generation)
    worker = None
    if settings.start_worker:
        from crowd.rounds.engine import build_engine
        from crowd.rounds.worker import Worker

        worker = Worker(
            settings.db_path,
            lambda: build_engine(settings, utcnow),
            utcnow,
            nice=settings.worker_nice,
        ).start()
    return build_app(service, Organizer(service)), service, worker


def _stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl+C: Gradio then closes its server and `launch` returns, so the
    `finally` in `main` runs and the replica is flushed."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.umask(0o077)  # the database, adapters, key file and exports: the app's user only
    from crowd import replication

    try:
        settings = load_settings()
        check_data_dir(settings.data_dir)
        replica = replication.prepare(settings)
    except (ConfigError, replication.ReplicaRefused) as exc:
        print(f"crowd: {exc}", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    replicators = []
    try:
        return _serve(settings, lambda: replicators.append(replication.start(settings, replica)))
    except KeyboardInterrupt:
        return 0
    finally:
        for replicator in filter(None, replicators):
            replicator.stop()


def _serve(settings: Settings, on_migrated) -> int:
    from crowd.models import ModelError
    from storage.db import StorageError

    try:
        demo, _, _ = build(settings, on_migrated)
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
        **launch_options(settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
