"""The first page before the model: the base model loads in a background thread (the first start
also converts the packaged GGUF, which takes most of a minute), so the app answers at once and
the page says the model is warming up. A chat sent meanwhile waits for the model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from crowd.limits import Refused
from crowd.serving.protocol import BASE, Adapters, Generation, Progress, Sampling

log = logging.getLogger("crowd.serving.warmup")

WAIT_S = 600.0  # the longest a chat waits for the model before it is refused


class WarmingGeneration:
    """Stands in for the engine that `load` builds in a background thread: every use waits
    for it, then goes to it. A failed load is logged and refuses every chat, saying why."""

    def __init__(self, load: Callable[[], Generation], wait_s: float = WAIT_S):
        self.wait_s = wait_s
        self._service: Generation | None = None
        self._error: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._load, args=(load,), daemon=True, name="crowd-model-warmup"
        )
        self._thread.start()

    @property
    def ready(self) -> bool:
        """The model is loaded and serving."""
        return self._service is not None

    def _load(self, load: Callable[[], Generation]) -> None:
        started = time.monotonic()
        try:
            self._service = load()
            log.info("the model is ready (%.1f s after start-up began)", time.monotonic() - started)
        except Exception as exc:  # logged and shown on every chat; the pages keep working
            self._error = str(exc)
            log.error("THE MODEL FAILED TO LOAD: %s", exc)
        finally:
            self._done.set()

    def service(self) -> Generation:
        """The loaded service, once it is; Refused when it failed or takes too long."""
        if not self._done.wait(self.wait_s):
            raise Refused("The model is still warming up; please try again in a minute.")
        if self._service is None:
            raise Refused(f"The model failed to load on this server: {self._error}")
        return self._service

    @property
    def adapters(self) -> Adapters:
        return self.service().adapters

    def default_sampling(self) -> Sampling:
        return self.service().default_sampling()

    def stream(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> Iterator[str]:
        yield from self.service().stream(chat, adapter, sampling)

    def reply(
        self, chat: Sequence[dict], adapter: str = BASE, sampling: Sampling | None = None
    ) -> str:
        return self.service().reply(chat, adapter, sampling)

    def replies(
        self,
        chats: Sequence[Sequence[dict]],
        adapters: Sequence[str],
        sampling: Sampling,
        seeds: Sequence[int | None] | None = None,
        max_batch: int = 16,
        progress: Progress | None = None,
    ) -> list[str]:
        return self.service().replies(chats, adapters, sampling, seeds, max_batch, progress)

    def at_cap(self, text: str) -> bool:
        return self.service().at_cap(text)

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
