"""Backup and restore: a consistent snapshot while the app writes, and refusal of bad archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import sqlite3
import tarfile
import threading
from pathlib import Path

import pytest

from crowd.cli.backup import main
from storage.backup import BackupError, make_backup, restore_backup
from storage.db import connect, migrate

T0 = "2026-11-02T10:00:00+00:00"


def seed_versions(db_path: Path, data_dir: Path) -> None:
    """A campaign whose round 1 crowned adapters/r1-g1; adapters/r1-g0 lost (retired)."""
    with connect(db_path) as db:
        db["campaigns"].insert(
            {"id": 1, "name": "c", "task": "emotion", "n_groups": 2, "created_at": T0}
        )
        for mv, path, status in (
            (1, None, "retired"),
            (2, "adapters/r1-g0", "retired"),
            (3, "adapters/r1-g1", "champion"),
        ):
            db["model_versions"].insert(
                {
                    "id": mv,
                    "campaign_id": 1,
                    "adapter_path": path,
                    "status": status,
                    "created_at": T0,
                }
            )
        db["rounds"].insert(
            {
                "id": 1,
                "campaign_id": 1,
                "number": 1,
                "state": "done",
                "champion_id": 1,
                "winner_id": 3,
                "opened_at": T0,
            }
        )
    for name in ("r1-g0", "r1-g1"):
        folder = data_dir / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(name.encode() * 1000)
        (folder / "adapter_config.json").write_text('{"r": 16}')


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Writer(threading.Thread):
    """The app, writing: one participant per committed transaction, ids recorded after commit."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(daemon=True)
        self.db_path = db_path
        self.committed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with connect(self.db_path) as db:
            n = 0
            while not self.stop.is_set():
                pid = f"w{n:06d}"
                db.execute(
                    "INSERT INTO participants (id, display_name, consented_at, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    [pid, "x" * 200, T0, T0],
                )
                db.conn.commit()
                self.committed.append(pid)
                n += 1


def test_backup_while_the_app_writes_restores_every_row_committed_before_it(
    settings, db_path, tmp_path
):
    seed_versions(db_path, settings.data_dir)
    writer = Writer(db_path)
    writer.start()
    try:
        while len(writer.committed) < 300:
            writer.stop.wait(0.01)
        before = list(writer.committed)
        manifest = make_backup(settings.data_dir, tmp_path / "b.tar.gz")
        after = len(writer.committed)
    finally:
        writer.stop.set()
        writer.join()
    assert after > len(before)  # the app kept writing while the backup ran (or before it)
    assert manifest["adapters"] == ["adapters/r1-g1"] and manifest["missing_adapters"] == []

    fresh = tmp_path / "fresh"
    result = restore_backup(tmp_path / "b.tar.gz", fresh)
    assert result["kept_in"] is None
    conn = sqlite3.connect(fresh / "crowd.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restored = {row[0] for row in conn.execute("SELECT id FROM participants")}
    conn.close()
    assert set(before) <= restored
    assert restored <= set(writer.committed)  # nothing invented, nothing half-written
    assert fingerprint(fresh / "adapters") == {
        k: v for k, v in fingerprint(settings.data_dir / "adapters").items() if "r1-g1" in k
    }
    migrate(fresh / "crowd.db")  # the app can open and migrate the restored file


def test_restore_refuses_to_replace_a_live_database_without_force(settings, db_path, tmp_path):
    seed_versions(db_path, settings.data_dir)
    make_backup(settings.data_dir, tmp_path / "b.tar.gz")
    with connect(db_path) as db:
        db.execute("DELETE FROM rounds")
        db.conn.commit()
    live = fingerprint(settings.data_dir)
    with pytest.raises(BackupError, match="already exists"):
        restore_backup(tmp_path / "b.tar.gz", settings.data_dir)
    assert fingerprint(settings.data_dir) == live

    result = restore_backup(tmp_path / "b.tar.gz", settings.data_dir, force=True)
    kept = Path(result["kept_in"])
    with connect(db_path) as db:
        assert db["rounds"].count == 1
    with connect(kept / "crowd.db") as db:
        assert db["rounds"].count == 0  # the replaced database is kept, not lost
    assert not list(settings.data_dir.glob(".restore-*"))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def tampered(data: bytes) -> bytes:
    """A well-formed archive whose database no longer matches the manifest's checksum."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as source,
        tarfile.open(fileobj=out, mode="w:gz") as target,
    ):
        for member in source:
            content = source.extractfile(member).read()
            if member.name == "crowd.db":
                content = content[:-4096] + b"\0" * 4096
            member.size = len(content)
            target.addfile(member, io.BytesIO(content))
    return out.getvalue()


def not_ours(data: bytes) -> bytes:
    return gzip.compress(b"hello")


@pytest.mark.parametrize(
    "damage, message",
    [
        (truncated, "corrupt or truncated"),
        (flipped, "corrupt or truncated|checksums"),
        (tampered, "checksums"),
        (not_ours, "corrupt or truncated|not a Crowd-SFT backup"),
    ],
)
def test_a_damaged_backup_is_refused_and_the_live_database_is_untouched(
    settings, db_path, tmp_path, damage, message
):
    seed_versions(db_path, settings.data_dir)
    good = tmp_path / "b.tar.gz"
    make_backup(settings.data_dir, good)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(damage(good.read_bytes()))
    live, names = fingerprint(settings.data_dir), sorted(settings.data_dir.iterdir())
    with pytest.raises(BackupError, match=message):
        restore_backup(bad, settings.data_dir, force=True)
    assert fingerprint(settings.data_dir) == live
    assert sorted(settings.data_dir.iterdir()) == names  # no staging folder left behind


def test_cli_backup_and_restore_with_clear_refusals(
    settings, db_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CROWD_DATA_DIR", str(settings.data_dir))
    seed_versions(db_path, settings.data_dir)
    assert main(["backup", "--out", str(tmp_path / "b.tar.gz")]) == 0
    assert main(["restore", str(tmp_path / "b.tar.gz")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "missing.tar.gz"), "--force"]) == 2
    assert "no backup at" in capsys.readouterr().err
    assert (
        main(
            ["backup", "--out", str(tmp_path / "x.tar.gz"), "--data-dir", str(tmp_path / "nowhere")]
        )
        == 2
    )
    assert "no database" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()
    target = tmp_path / "elsewhere"
    assert main(["restore", str(tmp_path / "b.tar.gz"), "--data-dir", str(target)]) == 0
    assert (target / "adapters" / "r1-g1" / "adapter_config.json").is_file()
