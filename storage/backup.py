"""Keep the data safe: a consistent snapshot of the live database, the champion adapters and
(when the identity comes from the data dir's key file) that key file, in one .tar.gz whose
manifest lists every member's SHA-256 and size and is signed (HMAC-SHA256) with a key that is
not in the archive. `storage.restore` reads it back and trusts nothing it was not signed for.

The snapshot uses SQLite's online backup API in a single step, which holds one read transaction:
under WAL the app keeps writing meanwhile, and the copy holds exactly the rows committed when the
step began.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "crowd-backup"
VERSION = 2  # 2: signed manifest, fixed member order, optional key file
DB_NAME = "crowd.db"  # the database's name inside the data dir and inside the archive
KEY_NAME = "identity.key"  # the identity key file's name in the data dir and the archive
MANIFEST = "manifest.json"
SIGNATURE = "hmac_sha256"  # the manifest field holding its signature
CHUNK = 1 << 20
PRIVATE = 0o600  # data files and archives: readable by the app's user only


class BackupError(RuntimeError):
    """A backup cannot be made or restored; the message says why. The data dir is unchanged."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_private(path: Path, mode: str = "wb"):
    """Open `path` for writing, created with mode 0600 (never world-readable, not even briefly)."""
    return open(path, mode, opener=lambda p, flags: os.open(p, flags, PRIVATE))


# --- the manifest's signature ----------------------------------------------------------------


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac_key(secret: bytes) -> bytes:
    # Domain separation: the same secret also signs volunteers' tokens.
    return hashlib.sha256(b"crowd-backup-manifest\0" + secret).digest()


def sign_manifest(manifest: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """`manifest` with its signature field set."""
    mac = hmac.new(_mac_key(secret), _canonical(manifest), hashlib.sha256).hexdigest()
    return {**manifest, SIGNATURE: mac}


def signature_ok(manifest: dict[str, Any], secret: bytes) -> bool:
    given = manifest.get(SIGNATURE)
    if not isinstance(given, str):
        return False
    mac = hmac.new(_mac_key(secret), _canonical(manifest), hashlib.sha256).hexdigest()
    return hmac.compare_digest(given.encode(), mac.encode())


# --- backup ----------------------------------------------------------------------------------


def snapshot_db(db_path: Path, target: Path) -> None:
    """Copy the live database to `target` (one self-contained file) while the app may write."""
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}")
    open_private(target).close()
    source = sqlite3.connect(db_path, timeout=10)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # pages=-1: one step, so one consistent read transaction
        copy.execute("PRAGMA journal_mode = DELETE")  # no -wal file beside the copy
        result = copy.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot snapshot {db_path}: {exc}") from None
    finally:
        copy.close()
        source.close()
    if result != "ok":
        raise BackupError(f"the database {db_path} fails its integrity check: {result}")


def champion_adapters(snapshot: Path) -> list[str]:
    """Adapter paths (relative to the data dir) of every version that is or was a champion."""
    conn = sqlite3.connect(snapshot)
    try:
        rows = conn.execute(
            "SELECT DISTINCT adapter_path FROM model_versions WHERE adapter_path IS NOT NULL"
            " AND (status = 'champion' OR id IN (SELECT champion_id FROM rounds)"
            " OR id IN (SELECT winner_id FROM rounds WHERE winner_id IS NOT NULL))"
            " ORDER BY adapter_path"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the database is not a migrated Crowd-SFT database: {exc}") from None
    finally:
        conn.close()
    return [row[0] for row in rows]


def _copy_adapters(data_dir: Path, names: list[str], staging: Path) -> list[str]:
    """Copy the adapters that exist into `staging`; return those missing or outside the dir."""
    missing = []
    root = (data_dir / "adapters").resolve()
    for name in names:
        source = (data_dir / name).resolve()
        if not source.is_relative_to(root) or source == root or not source.is_dir():
            missing.append(name)
        else:
            shutil.copytree(source, staging / name, symlinks=False)
    return missing


def _members(staging: Path, adapters: list[str]) -> list[str]:
    """Archive members in the order restore reads them: database, key file, adapters."""
    names = [DB_NAME] + ([KEY_NAME] if (staging / KEY_NAME).is_file() else [])
    for adapter in adapters:
        names += sorted(
            p.relative_to(staging).as_posix() for p in (staging / adapter).rglob("*") if p.is_file()
        )
    return names


def _stage(data_dir: Path, staging: Path, key_file: Path | None) -> tuple[list[str], list[str]]:
    snapshot_db(data_dir / DB_NAME, staging / DB_NAME)
    if key_file is not None:
        with open_private(staging / KEY_NAME) as sink:
            sink.write(key_file.read_bytes())
    adapters = champion_adapters(staging / DB_NAME)
    missing = _copy_adapters(data_dir, adapters, staging)
    return [a for a in adapters if a not in missing], missing


def make_backup(
    data_dir: Path,
    out: Path,
    *,
    secret: bytes,
    signed_with: str,
    key_file: Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the data dir's database, champion adapters and `key_file` (the identity key file,
    when the identity comes from it) to `out` (.tar.gz, mode 0600); return the manifest, signed
    with `secret` (`signed_with` names where that secret comes from, for the restore's message).
    The archive appears only when complete (written beside it, then renamed)."""
    data_dir, out = Path(data_dir), Path(out)
    with tempfile.TemporaryDirectory(prefix="crowd-backup-") as tmp:
        staging = Path(tmp)
        adapters, missing = _stage(data_dir, staging, key_file)
        names = _members(staging, adapters)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "signed_with": signed_with,
            "adapters": adapters,
            "missing_adapters": missing,
            "files": {
                name: {
                    "sha256": sha256_file(staging / name),
                    "bytes": (staging / name).stat().st_size,
                }
                for name in names
            },
        }
        manifest = sign_manifest(manifest, secret)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _write_archive(out, staging, [MANIFEST, *names])
    return manifest


def _write_archive(out: Path, staging: Path, names: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with (
        open_private(partial) as sink,
        tarfile.open(fileobj=sink, mode="w:gz", compresslevel=6) as tar,
    ):
        for name in names:
            tar.add(staging / name, name, recursive=False)
    partial.replace(out)
