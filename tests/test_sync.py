"""Pushed backups: off by default, private only, retried with backoff, never fatal."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from crowd.identity import backup_keys
from crowd.sync import ARCHIVE, BackupSync, push_once, push_with_retry, start_sync
from storage.db import connect
from storage.restore import restore_backup

T0 = "2026-11-02T10:00:00+00:00"


class FolderHub:
    """A Hub on the local disk: a repo is a folder, each upload a commit (a full copy).
    It can refuse the first `fail_uploads` uploads, or report its repos as public."""

    def __init__(self, root: Path, *, fail_uploads: int = 0, public: bool = False) -> None:
        self.root, self.fail_uploads, self.public = root, fail_uploads, public
        self.commits: list[str] = []
        self.private: dict[str, bool] = {}

    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool):
        if repo_id in self.private and not exist_ok:
            raise FileExistsError(repo_id)
        self.private.setdefault(repo_id, private and not self.public)

    def repo_info(self, repo_id: str, *, repo_type: str):
        return SimpleNamespace(id=repo_id, private=self.private[repo_id])

    def upload_folder(self, *, repo_id: str, folder_path: str, repo_type: str, commit_message: str):
        if self.fail_uploads > 0:
            self.fail_uploads -= 1
            raise ConnectionError("the Hub is unreachable")
        main = self.root / repo_type / repo_id
        shutil.rmtree(main, ignore_errors=True)
        shutil.copytree(folder_path, main)
        self.commits.append(commit_message)

    def repo(self, repo_id: str) -> Path:
        return self.root / "dataset" / repo_id


def add_volunteer(db_path: Path, pid: str) -> None:
    with connect(db_path) as db:
        if not db.table("campaigns").count:
            db.table("campaigns").insert(
                {"id": 1, "name": "c", "task": "preference", "n_groups": 2, "created_at": T0}
            )
            db.table("model_versions").insert(
                {"id": 1, "campaign_id": 1, "status": "champion", "created_at": T0}
            )
            db.table("rounds").insert(
                {"id": 1, "campaign_id": 1, "number": 1, "champion_id": 1, "opened_at": T0}
            )
        db.table("participants").insert(
            {"id": pid, "display_name": pid, "consented_at": T0, "created_at": T0}
        )


def test_sync_is_off_unless_token_and_repo_are_set(settings, tmp_path):
    hub = FolderHub(tmp_path / "hub")
    assert start_sync(settings, hub) is None
    assert start_sync(replace(settings, hf_token="hf_x"), hub) is None
    assert start_sync(replace(settings, backup_repo="me/backup"), hub) is None


def test_a_push_uploads_the_export_and_a_restorable_backup_to_a_private_repo(
    settings, db_path, tmp_path
):
    hub = FolderHub(tmp_path / "hub")
    assert push_once(settings, "me/backup", hub) is None  # nobody yet: nothing pushed
    assert hub.commits == []
    add_volunteer(db_path, "alice")
    sha = push_once(settings, "me/backup", hub)
    assert sha and len(hub.commits) == 1 and hub.private["me/backup"] is True
    repo = hub.repo("me/backup")
    assert (repo / "README.md").read_text().startswith("---\nlicense: cc-by-4.0")
    assert (repo / "sft.parquet").is_file()
    restore_backup(repo / ARCHIVE, tmp_path / "restored", keys=backup_keys(settings))
    with connect(tmp_path / "restored" / "crowd.db") as db:
        assert [row["id"] for row in db.table("participants").rows] == ["alice"]

    assert push_once(settings, "me/backup", hub, last_db_sha=sha) is None  # unchanged
    add_volunteer(db_path, "bob")
    assert push_once(settings, "me/backup", hub, last_db_sha=sha) not in (None, sha)
    assert len(hub.commits) == 2


def test_a_failed_push_is_retried_with_backoff_and_logged(settings, db_path, tmp_path, caplog):
    add_volunteer(db_path, "alice")
    hub = FolderHub(tmp_path / "hub", fail_uploads=2)
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, logger="crowd.sync"):
        ok = push_with_retry(
            lambda: push_once(settings, "me/b", hub),
            attempts=4,
            first_delay_s=5,
            wait=lambda s: waits.append(s) or False,
        )
    assert ok and waits == [5, 10] and len(hub.commits) == 1
    assert [r.levelname for r in caplog.records].count("WARNING") == 2

    hub.fail_uploads = 100
    caplog.clear()
    ok = push_with_retry(
        lambda: push_once(settings, "me/b", hub),
        attempts=3,
        first_delay_s=1,
        wait=lambda s: False,
    )
    assert not ok and len(hub.commits) == 1  # gave up, and raised nothing
    assert "failed 3 times" in caplog.records[-1].getMessage()


def test_a_public_repo_is_refused_without_retrying(settings, db_path, tmp_path, caplog):
    add_volunteer(db_path, "alice")
    hub = FolderHub(tmp_path / "hub", public=True)
    waits: list[float] = []
    ok = push_with_retry(
        lambda: push_once(settings, "me/open", hub),
        attempts=5,
        first_delay_s=1,
        wait=lambda s: waits.append(s) or False,
    )
    assert not ok and waits == [] and hub.commits == []
    assert "public" in caplog.text


def test_the_thread_survives_failures_and_stops_when_asked(settings, db_path, tmp_path):
    add_volunteer(db_path, "alice")
    hub = FolderHub(tmp_path / "hub", fail_uploads=1)
    sync = BackupSync(settings, "me/b", hub, every_s=0.05, first_delay_s=0.01)
    sync.start()
    try:
        deadline = time.monotonic() + 20
        while not hub.commits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.commits and sync.is_alive()
    finally:
        sync.stop(timeout=20)
    assert not sync.is_alive()
