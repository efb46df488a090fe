"""Backup and restore: a consistent snapshot while the app writes, and refusal of bad archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from crowd.cli.backup import main
from crowd.identity import Identities, backup_keys, backup_signer, key_file, load_secret
from storage.backup import FORMAT, MANIFEST, VERSION, BackupError, make_backup, sign_manifest
from storage.db import connect, migrate
from storage.restore import restore_backup

T0 = "2026-11-02T10:00:00+00:00"


def seed_versions(db_path: Path, data_dir: Path) -> None:
    """A campaign whose round 1 crowned adapters/r1-g1; adapters/r1-g0 lost (retired)."""
    with connect(db_path) as db:
        db.table("campaigns").insert(
            {"id": 1, "name": "c", "task": "emotion", "n_groups": 2, "created_at": T0}
        )
        for mv, path, status in (
            (1, None, "retired"),
            (2, "adapters/r1-g0", "retired"),
            (3, "adapters/r1-g1", "champion"),
        ):
            db.table("model_versions").insert(
                {
                    "id": mv,
                    "campaign_id": 1,
                    "adapter_path": path,
                    "status": status,
                    "created_at": T0,
                }
            )
        db.table("rounds").insert(
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


def backup(settings, out: Path) -> dict:
    """A backup as the app and the CLI make it: signed, with the key file."""
    secret, signed_with = backup_signer(settings)
    return make_backup(
        settings.data_dir, out, secret=secret, signed_with=signed_with, key_file=key_file(settings)
    )


def restore(archive: Path, data_dir: Path, settings, **options) -> dict:
    """Restore with the keys the settings' own data dir holds (the same machine)."""
    return restore_backup(archive, data_dir, keys=backup_keys(settings), **options)


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
        manifest = backup(settings, tmp_path / "b.tar.gz")
        after = len(writer.committed)
    finally:
        writer.stop.set()
        writer.join()
    assert after > len(before)  # the app kept writing while the backup ran (or before it)
    assert manifest["adapters"] == ["adapters/r1-g1"] and manifest["missing_adapters"] == []

    fresh = tmp_path / "fresh"
    result = restore(tmp_path / "b.tar.gz", fresh, settings)
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
    backup(settings, tmp_path / "b.tar.gz")
    with connect(db_path) as db:
        db.execute("DELETE FROM rounds")
        db.conn.commit()
    live = fingerprint(settings.data_dir)
    with pytest.raises(BackupError, match="already exists"):
        restore(tmp_path / "b.tar.gz", settings.data_dir, settings)
    assert fingerprint(settings.data_dir) == live

    result = restore(tmp_path / "b.tar.gz", settings.data_dir, settings, force=True)
    kept = Path(result["kept_in"])
    with connect(db_path) as db:
        assert db.table("rounds").count == 1
    with connect(kept / "crowd.db") as db:
        assert db.table("rounds").count == 0  # the replaced database is kept, not lost
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
        (flipped, "corrupt or truncated|checksum"),
        (tampered, "checksum"),
        (not_ours, "corrupt or truncated|not a Crowd-SFT backup"),
    ],
)
def test_a_damaged_backup_is_refused_and_the_live_database_is_untouched(
    settings, db_path, tmp_path, damage, message
):
    seed_versions(db_path, settings.data_dir)
    good = tmp_path / "b.tar.gz"
    backup(settings, good)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(damage(good.read_bytes()))
    live, names = fingerprint(settings.data_dir), sorted(settings.data_dir.iterdir())
    with pytest.raises(BackupError, match=message):
        restore(bad, settings.data_dir, settings, force=True)
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
    restore_elsewhere = ["restore", str(tmp_path / "b.tar.gz"), "--data-dir", str(target)]
    assert main(restore_elsewhere) == 2  # signed with a key file that dir does not have
    assert "CROWD_BACKUP_KEY" in capsys.readouterr().err and not target.exists()
    key = str(settings.data_dir / "identity.key")
    assert main([*restore_elsewhere, "--key-file", key]) == 0
    assert (target / "adapters" / "r1-g1" / "adapter_config.json").is_file()


# --- identity survives, files stay private ---------------------------------------------------


def test_a_restore_on_a_new_machine_keeps_every_token_valid(settings, db_path, tmp_path):
    seed_versions(db_path, settings.data_dir)
    token = Identities(load_secret(settings.data_dir)).sign("volunteer-1")
    backup_key = "k" * 40  # CROWD_BACKUP_KEY: a Space secret, outside every archive
    signer = replace(settings, backup_key=backup_key)
    backup(signer, tmp_path / "b.tar.gz")
    assert stat.S_IMODE((tmp_path / "b.tar.gz").stat().st_mode) == 0o600

    new_machine = replace(settings, data_dir=tmp_path / "new", backup_key=backup_key)
    restore(tmp_path / "b.tar.gz", new_machine.data_dir, new_machine)
    assert Identities(load_secret(new_machine.data_dir)).verify(token) == "volunteer-1"
    for name in ("crowd.db", "identity.key"):
        assert stat.S_IMODE((new_machine.data_dir / name).stat().st_mode) == 0o600


def test_with_an_identity_secret_the_key_file_stays_out_and_tokens_stay_valid(
    settings, db_path, tmp_path
):
    seed_versions(db_path, settings.data_dir)
    secret = "s" * 40  # CROWD_IDENTITY_SECRET
    with_secret = replace(settings, identity_secret=secret)
    token = Identities(load_secret(settings.data_dir, secret)).sign("volunteer-2")
    manifest = backup(with_secret, tmp_path / "b.tar.gz")
    assert "identity.key" not in manifest["files"]
    assert manifest["signed_with"] == "CROWD_IDENTITY_SECRET"
    new_machine = replace(with_secret, data_dir=tmp_path / "new")
    restore(tmp_path / "b.tar.gz", new_machine.data_dir, new_machine)
    assert Identities(load_secret(new_machine.data_dir, secret)).verify(token) == "volunteer-2"


# --- hostile archives ------------------------------------------------------------------------


def forge(
    path: Path,
    members: list[tuple[str, bytes | str]],
    key: bytes | None,
    *,
    adapters: list[str] = (),
    listed: dict[str, bytes] | None = None,
) -> None:
    """Write an archive as an attacker would: `members` are (name, content) for plain files, or
    (name, 'symlink:TARGET' | 'hardlink:TARGET' | 'fifo'); the manifest lists `listed` (default:
    the plain members) with honest sums and sizes, and is signed with `key` (None: unsigned,
    as version 1 wrote it)."""
    listed = listed if listed is not None else {n: c for n, c in members if isinstance(c, bytes)}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": T0,
        "signed_with": "CROWD_BACKUP_KEY",
        "adapters": list(adapters),
        "missing_adapters": [],
        "files": {
            n: {"sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c)} for n, c in listed.items()
        },
    }
    manifest = sign_manifest(manifest, key) if key else manifest
    with tarfile.open(path, "w:gz") as tar:
        for name, content in [(MANIFEST, json.dumps(manifest).encode()), *members]:
            info = tarfile.TarInfo(name)
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            kind, _, target = content.partition(":")
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}.get(
                kind, tarfile.FIFOTYPE
            )
            info.linkname = target
            tar.addfile(info)


def database_bytes(tmp_path: Path, adapter_path: str | None = "adapters/r1-g1") -> bytes:
    """A genuine migrated database naming one adapter folder."""
    path = tmp_path / f"forged-{uuid.uuid4().hex}.db"
    migrate(path)
    with connect(path) as db:
        db.table("campaigns").insert(
            {"id": 1, "name": "c", "task": "emotion", "n_groups": 2, "created_at": T0}
        )
        db.table("model_versions").insert(
            {
                "id": 1,
                "campaign_id": 1,
                "adapter_path": adapter_path,
                "status": "champion",
                "created_at": T0,
            }
        )
        db.execute("PRAGMA journal_mode = DELETE")
    return path.read_bytes()


KEY = b"k" * 40  # the genuine CROWD_BACKUP_KEY
ATTACKER = b"a" * 40


@pytest.fixture
def live(settings, db_path):
    """A live data dir (database, adapters, key file) and a way to prove it did not change."""
    seed_versions(db_path, settings.data_dir)
    load_secret(settings.data_dir)
    before = fingerprint(settings.data_dir), sorted(p.name for p in settings.data_dir.iterdir())

    def unchanged() -> bool:
        now = fingerprint(settings.data_dir), sorted(p.name for p in settings.data_dir.iterdir())
        return now == before

    return unchanged


def refused(archive: Path, settings, message: str, **options) -> None:
    options.setdefault("keys", [KEY])
    with pytest.raises(BackupError, match=message):
        restore_backup(archive, settings.data_dir, force=True, **options)


def test_an_unsigned_or_tampered_archive_is_refused_unless_told_otherwise(settings, live, tmp_path):
    signer = replace(settings, backup_key=KEY.decode())
    backup(signer, tmp_path / "good.tar.gz")
    # The attacker swaps the database and recomputes every sum, but cannot sign with KEY.
    archive = tmp_path / "tampered.tar.gz"
    forge(archive, [("crowd.db", database_bytes(tmp_path))], ATTACKER)
    refused(archive, settings, "unsigned or its signature does not match.*CROWD_BACKUP_KEY")
    assert live()
    unsigned = tmp_path / "unsigned.tar.gz"
    forge(unsigned, [("crowd.db", database_bytes(tmp_path))], None)
    refused(unsigned, settings, "unsigned or its signature does not match")
    assert live()
    restore_backup(archive, settings.data_dir, keys=[KEY], force=True, insecure_unsigned=True)
    assert not live()  # told to, it restores the unsigned database...


def test_an_unsigned_archive_never_brings_its_key_file(settings, live, tmp_path):
    key_before = (settings.data_dir / "identity.key").read_bytes()
    archive = tmp_path / "keyswap.tar.gz"
    planted_key = b"p" * 64
    forge(
        archive, [("crowd.db", database_bytes(tmp_path)), ("identity.key", planted_key)], ATTACKER
    )
    restore_backup(archive, settings.data_dir, keys=[KEY], force=True, insecure_unsigned=True)
    assert (settings.data_dir / "identity.key").read_bytes() == key_before


@pytest.mark.parametrize(
    "members, adapters, message",
    [
        # The key file and a planted model, listed as "adapters".
        ([("identity.key", b"p" * 64)], ["identity.key"], "does not name"),
        ([("models/planted", b"x")], [], "never holds"),
        ([("../evil", b"x")], [], "never holds"),
        ([("/etc/evil", b"x")], [], "never holds"),
        ([("adapters/r1-g1/../../identity.key", b"x")], [], "never holds"),
        ([("adapters/r1-g1/link", "symlink:/etc/passwd")], [], "not a plain file"),
        ([("adapters/r1-g1/hard", "hardlink:identity.key")], [], "not a plain file"),
        ([("adapters/r1-g1/fifo", "fifo")], [], "not a plain file"),
        ([("adapters/planted/adapter_model.safetensors", b"x")], [], "not in an adapter folder"),
    ],
)
def test_a_hostile_member_is_refused_even_when_signed(
    settings, live, tmp_path, members, adapters, message
):
    archive = tmp_path / "hostile.tar.gz"
    listed = {n: c if isinstance(c, bytes) else b"" for n, c in members}
    db = database_bytes(tmp_path)
    forge(
        archive,
        [("crowd.db", db), *members],
        KEY,
        adapters=adapters,
        listed={"crowd.db": db, **listed},
    )
    refused(archive, settings, message)
    assert live()


@pytest.mark.parametrize("adapter_path", ["/etc", "adapters/../../outside", "models/x", "adapters"])
def test_a_database_naming_an_adapter_outside_the_data_dir_is_refused(
    settings, live, tmp_path, adapter_path
):
    archive = tmp_path / "paths.tar.gz"
    forge(archive, [("crowd.db", database_bytes(tmp_path, adapter_path))], KEY)
    refused(archive, settings, "outside the data dir's adapters/ folder")
    assert live()


def bomb(path: Path, size: int, claimed: int, key: bytes = KEY) -> None:
    """A database member of `size` zero bytes (it compresses ~1000:1), listed as `claimed`."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": T0,
        "adapters": [],
        "missing_adapters": [],
        "files": {"crowd.db": {"sha256": "0" * 64, "bytes": claimed}},
    }
    with tarfile.open(path, "w:gz") as tar:
        body = json.dumps(sign_manifest(manifest, key)).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        info = tarfile.TarInfo("crowd.db")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))


def test_a_decompression_bomb_is_refused_before_it_fills_the_disk(settings, live, tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    bomb(archive, 64 << 20, 64 << 20)
    assert archive.stat().st_size < 200_000  # 64 MB of zeros in a ~64 KB archive
    refused(archive, settings, "over the 16,777,216-byte limit", max_bytes=16 << 20)
    refused(archive, settings, "has 1,000,000 free", free_bytes=lambda path: 1_000_000)
    assert live()
    bomb(archive, 64 << 20, 4096)  # the manifest lies about the size
    refused(archive, settings, "the manifest says 4,096")
    assert live()
    bomb(archive, 64 << 20, 64 << 20, ATTACKER)  # unsigned: refused before any size is trusted
    refused(archive, settings, "signature")
    assert live()


def test_members_out_of_order_or_twice_are_refused(settings, live, tmp_path):
    db = database_bytes(tmp_path)
    adapter = ("adapters/r1-g1/adapter_config.json", b"{}")
    archive = tmp_path / "order.tar.gz"
    forge(archive, [adapter, ("crowd.db", db)], KEY)
    refused(archive, settings, "comes before the database")
    forge(archive, [("crowd.db", db), adapter, adapter], KEY)
    refused(archive, settings, "comes twice")
    assert live()


def test_an_oversized_tar_header_is_refused_before_it_is_read(settings, live, tmp_path):
    """A pax header claiming 256 MB (zeros: a small archive) is refused at its header: the
    archive's reader never holds it in memory."""
    import gzip
    import tracemalloc

    archive = tmp_path / "header.tar.gz"
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 256 << 20
    with gzip.open(archive, "wb", compresslevel=9) as sink:
        sink.write(info.tobuf(tarfile.USTAR_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(256):
            sink.write(chunk)
    assert archive.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        refused(archive, settings, "extended tar header of 268,435,456 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # tarfile inflates ~10 KB of gzip at a time (up to ~10 MB of zeros): bounded, unlike the
    # 256 MB header it used to read whole
    assert peak < 64 << 20, f"{peak:,} bytes held while refusing"
    assert live()


def test_the_restore_command_makes_private_folders(settings, db_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CROWD_DATA_DIR", str(settings.data_dir))
    seed_versions(db_path, settings.data_dir)
    assert main(["backup", "--out", str(tmp_path / "b.tar.gz")]) == 0
    before = os.umask(0o022)  # a permissive shell
    try:
        target = tmp_path / "new"
        key = str(settings.data_dir / "identity.key")
        assert (
            main(
                [
                    "restore",
                    str(tmp_path / "b.tar.gz"),
                    "--data-dir",
                    str(target),
                    "--key-file",
                    key,
                ]
            )
            == 0
        )
    finally:
        os.umask(before)
    folders = [target, *(p for p in target.rglob("*") if p.is_dir())]
    assert folders and all(p.stat().st_mode & 0o077 == 0 for p in folders), [
        (p, oct(p.stat().st_mode)) for p in folders
    ]
