"""The groups' LoRA adapters on the one shared base model, by name, and which of them replies
in flight are using. Retiring an adapter that a reply is still decoding with waits for that
reply to end: rows join and leave a running batch at every step, so a champion crowned
mid-stream must not pull the weights from under a row.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from crowd.models import LoadedModel, ModelError
from crowd.serving.protocol import BASE


class InUse:
    """Counts the replies in flight per adapter name; thread-safe."""

    def __init__(self) -> None:
        self._busy: Counter[str] = Counter()
        self._retired: set[str] = set()
        self._guard = threading.Lock()

    def hold(self, name: str) -> None:
        with self._guard:
            self._busy[name] += 1

    def release(self, name: str) -> bool:
        """One reply using `name` ended; True when `name` was retired and is now idle."""
        with self._guard:
            self._busy[name] -= 1
            if self._busy[name] > 0 or name not in self._retired:
                return False
            self._retired.discard(name)
            return True

    def retire(self, name: str) -> bool:
        """True when `name` is idle and may go now; else it goes when its last reply ends."""
        with self._guard:
            if self._busy[name] > 0:
                self._retired.add(name)
                return False
            self._retired.discard(name)
            return True

    def revive(self, name: str) -> None:
        """`name` was loaded again: it is not retired any more."""
        with self._guard:
            self._retired.discard(name)


class AdapterSet(ABC):
    """Adapters loaded by name, least recently used first, with the replies using each: what
    the in-process registry and the vLLM server's set share. Subclasses load and unload."""

    def __init__(self, lock: threading.RLock, keep: int = 8):
        self._lock = lock
        self.keep = keep  # `ensure` unloads the least recently used beyond this many
        self.paths: dict[str, Path] = {}  # insertion order = least recently used first
        self.in_use = InUse()

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    @abstractmethod
    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder `path` as `name`."""

    @abstractmethod
    def unload(self, name: str) -> None:
        """Remove `name` now, or when the last reply using it ends."""

    def ensure(self, name: str, path: Path | None) -> str:
        """Load `path` as `name` unless already loaded; None means the bare base."""
        if path is None:
            return BASE
        with self._lock:
            if name in self.paths:
                self.paths[name] = self.paths.pop(name)  # most recently used
                return name
            for stale in list(self.paths)[: max(0, len(self.paths) - self.keep + 1)]:
                self.unload(stale)  # champions of past rounds: a few MB each
            self.load(name, path)
        return name

    def hold(self, name: str) -> None:
        """A reply starts with `name`; raises ModelError when it is not loaded."""
        with self._lock:
            if name != BASE and name not in self.paths:
                raise ModelError(f"no adapter named {name!r} is loaded")
            self.in_use.hold(name)


class AdapterRegistry(AdapterSet):
    """The LoRA adapters on the one shared base model, by name. Loading an adapter never copies
    the base: the first load wraps the base in a PeftModel, later ones add a few MB each."""

    def __init__(
        self,
        loaded: LoadedModel,
        lock: threading.RLock,
        keep: int = 8,
        changed: Callable[[str], None] | None = None,
    ):
        super().__init__(lock, keep)  # the lock is held by the scheduler while it decodes a step
        self._loaded = loaded
        self._changed = changed  # told a name whose weights changed or went (the prefix cache)

    def load(self, name: str, path: Path) -> None:
        """Load the adapter folder at `path` as `name` (reloading if the name exists)."""
        from peft import PeftModel

        check_adapter_folder(path)
        with self._lock:
            model = self._loaded.model
            try:
                if not isinstance(model, PeftModel):
                    model = PeftModel.from_pretrained(
                        model, str(path), adapter_name=name, is_trainable=False
                    )
                    self._loaded.model = model.eval()
                else:
                    if name in model.peft_config:
                        model.delete_adapter(name)
                    model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelError(f"cannot load the adapter {path}: {exc}") from exc
            self.paths[name] = Path(path)
            self.in_use.revive(name)
            if self._changed is not None:
                self._changed(name)

    def unload(self, name: str) -> None:
        """Remove `name` now, or when the last reply decoding with it ends."""
        with self._lock:
            if name in self.paths and self.in_use.retire(name):
                self._delete(name)

    def release(self, name: str) -> None:
        with self._lock:
            if self.in_use.release(name) and name in self.paths:
                self._delete(name)

    def save(self, name: str, out_dir: Path) -> Path:
        """Write adapter `name` to `out_dir` (PEFT format)."""
        with self._lock:
            self._loaded.model.save_pretrained(str(out_dir), selected_adapters=[name])
        return out_dir / name if name != "default" else out_dir

    def _delete(self, name: str) -> None:
        self._loaded.model.delete_adapter(name)
        del self.paths[name]
        if self._changed is not None:
            self._changed(name)


def check_adapter_folder(path: Path) -> None:
    """A clear message for the usual ways an adapter folder is broken."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"the adapter {path} has no adapter_config.json")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"the adapter {path} has no adapter_model.safetensors")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"the adapter {weights} is corrupt: {exc}") from exc
