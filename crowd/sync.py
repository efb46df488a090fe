"""Push the latest backup and export to a private Hugging Face dataset repo, on a schedule.

Off unless the settings give both a token (CROWD_HF_TOKEN or HF_TOKEN) and a repo id
(CROWD_BACKUP_REPO). Each push uploads one folder: the export at the repo's root (its dataset
card makes the private repo browsable) and `backup/crowd-backup.tar.gz` (restore it with
`python -m crowd restore`). The Hub's git history keeps every earlier push. A failed push is
logged and retried with exponential backoff; nothing here ever stops the app.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from crowd.config import Settings
from crowd.export import export_dataset
from crowd.hub import Hub
from crowd.identity import backup_signer, key_file
from storage.backup import DB_NAME, make_backup
from storage.db import has_participants
from storage.export_snapshot import ExportError

log = logging.getLogger("crowd.sync")
REPO_TYPE = "dataset"
ARCHIVE = "backup/crowd-backup.tar.gz"


class SyncRefused(RuntimeError):
    """A push that must not happen (the repo is public); retrying would not help."""


def push_once(
    settings: Settings,
    repo_id: str,
    hub: Hub,
    *,
    last_db_sha: str | None = None,
    now: datetime | None = None,
) -> str | None:
    """Push one snapshot and export; return the database's SHA-256, or None if nothing was
    pushed (no participants yet, or the database is unchanged since `last_db_sha`)."""
    data_dir = settings.data_dir
    if not has_participants(data_dir / DB_NAME):
        log.info("backup push skipped: no participants yet")
        return None
    hub.create_repo(repo_id, repo_type=REPO_TYPE, private=True, exist_ok=True)
    if not getattr(hub.repo_info(repo_id, repo_type=REPO_TYPE), "private", False):
        raise SyncRefused(f"{repo_id} is public: backups hold personal data, make it private")
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="crowd-sync-") as tmp:
        folder = Path(tmp) / "repo"
        try:
            export_dataset(data_dir / DB_NAME, folder)
        except ExportError as exc:  # e.g. no campaign yet: the backup alone still matters
            log.info("backup push without an export: %s", exc)
        secret, signed_with = backup_signer(settings)
        manifest = make_backup(
            data_dir,
            folder / ARCHIVE,
            secret=secret,
            signed_with=signed_with,
            key_file=key_file(settings),
        )
        db_sha = manifest["files"][DB_NAME]["sha256"]
        if db_sha == last_db_sha:
            log.info("backup push skipped: nothing changed since the last push")
            return None
        hub.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=REPO_TYPE,
            commit_message=f"Crowd-SFT backup {stamp}",
        )
    log.info("backup pushed to %s (%s)", repo_id, stamp)
    return db_sha


def push_with_retry(
    push: Callable[[], object],
    *,
    attempts: int,
    first_delay_s: float,
    wait: Callable[[float], bool],
) -> bool:
    """Call `push` until it succeeds, at most `attempts` times, waiting first_delay_s, then
    twice that, ... between tries. `wait(s)` sleeps and returns True when asked to stop.
    Returns whether a push succeeded; never raises."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            push()
            return True
        except SyncRefused as exc:
            log.error("backup push refused: %s", exc)
            return False
        except Exception as exc:  # network, auth, Hub outage, full disk: logged, never fatal
            if attempt == attempts:
                log.error(
                    "backup push failed %d times; next try at the next scheduled push: %s",
                    attempts,
                    exc,
                )
                return False
            log.warning(
                "backup push failed (attempt %d of %d), retrying in %.0f s: %s",
                attempt,
                attempts,
                delay,
                exc,
            )
            if wait(delay):
                return False
            delay *= 2
    return False


class BackupSync(threading.Thread):
    """A daemon thread pushing right away, then every `every_s` seconds, until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        repo_id: str,
        hub: Hub,
        *,
        every_s: float,
        attempts: int = 5,
        first_delay_s: float = 30.0,
    ) -> None:
        super().__init__(name="crowd-backup-sync", daemon=True)
        self.settings, self.repo_id, self.hub = settings, repo_id, hub
        self.every_s, self.attempts, self.first_delay_s = every_s, attempts, first_delay_s
        self.last_db_sha: str | None = None
        self._halt = threading.Event()

    def _push(self) -> None:
        sha = push_once(self.settings, self.repo_id, self.hub, last_db_sha=self.last_db_sha)
        self.last_db_sha = sha or self.last_db_sha

    def run(self) -> None:
        while not self._halt.is_set():
            push_with_retry(
                self._push,
                attempts=self.attempts,
                first_delay_s=self.first_delay_s,
                wait=self._halt.wait,
            )
            self._halt.wait(self.every_s)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end (between pushes or backoff waits) and wait for it."""
        self._halt.set()
        self.join(timeout)


def start_sync(settings: Settings, hub: Hub | None = None) -> BackupSync | None:
    """Start pushing backups when settings name a token and a repo; None (and a log line) if
    off. `hub` defaults to `huggingface_hub.HfApi` with the settings' token."""
    if not settings.hf_token or not settings.backup_repo:
        log.info("backup push off (set CROWD_BACKUP_REPO and HF_TOKEN to push to the Hub)")
        return None
    if hub is None:
        from huggingface_hub import HfApi

        hub = HfApi(token=settings.hf_token)
    sync = BackupSync(settings, settings.backup_repo, hub, every_s=settings.backup_every_s)
    sync.start()
    log.info("backup push on: %s every %d s", settings.backup_repo, settings.backup_every_s)
    return sync
