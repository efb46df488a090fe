"""Keep the data safe: a consistent snapshot of the live database plus the champion adapters in
one .tar.gz with a manifest of SHA-256 sums, and a restore that checks all of it first.

The snapshot uses SQLite's online backup API in a single step, which holds one read transaction:
under WAL the app keeps writing meanwhile, and the copy holds exactly the rows committed when the
step began. Restore extracts into a staging folder inside the data dir, verifies every member
against the manifest and runs `PRAGMA integrity_check`; only then does it move the live files
aside (kept in `pre-restore-STAMP/`) and rename the new ones in. A corrupt, truncated or tampered
archive is refused before the data dir is touched. Stop the app before restoring.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT = "crowd-backup"
VERSION = 1
DB_NAME = "crowd.db"  # the database's name inside the data dir and inside the archive
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup cannot be made or restored; the message says why. The data dir is unchanged."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- backup ----------------------------------------------------------------------------------


def snapshot_db(db_path: Path, target: Path) -> None:
    """Copy the live database to `target` (one self-contained file) while the app may write."""
    if not db_path.is_file():
        raise BackupError(f"no database at {db_path}")
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
    root = data_dir.resolve()
    for name in names:
        source = (data_dir / name).resolve()
        if not source.is_relative_to(root) or source == root or not source.exists():
            missing.append(name)
        elif source.is_dir():
            shutil.copytree(source, staging / name, symlinks=False)
        else:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / name)
    return missing


def make_backup(data_dir: Path, out: Path, *, now: datetime | None = None) -> dict[str, Any]:
    """Write the data dir's database and champion adapters to `out` (.tar.gz); return the
    manifest. The archive appears only when complete (written beside it, then renamed)."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="crowd-backup-") as tmp:
        staging = Path(tmp)
        snapshot_db(Path(data_dir) / DB_NAME, staging / DB_NAME)
        adapters = champion_adapters(staging / DB_NAME)
        missing = _copy_adapters(Path(data_dir), adapters, staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "adapters": [a for a in adapters if a not in missing],
            "missing_adapters": missing,
            "files": {
                p.relative_to(staging).as_posix(): {
                    "sha256": sha256_file(p),
                    "bytes": p.stat().st_size,
                }
                for p in files
            },
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz", compresslevel=6) as archive:
            archive.add(staging / MANIFEST, MANIFEST)
            for path in files:
                archive.add(path, path.relative_to(staging).as_posix())
        partial.replace(out)
    return manifest


# --- restore ---------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"the backup holds an unsafe path {name!r}")
    return path.as_posix()


def _extract(archive: Path, staging: Path) -> dict[str, str]:
    """Extract every regular file into `staging`; return name -> sha256 as read."""
    sums: dict[str, str] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isdir():
                continue
            name = _safe_name(member.name)
            if not member.isfile():
                raise BackupError(f"the backup holds {name!r}, which is not a plain file")
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            if source is None:
                raise BackupError(f"cannot read {name!r} from the backup")
            with source, open(target, "wb") as sink:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
            sums[name] = digest.hexdigest()
    return sums


def verify_backup(archive: Path, staging: Path) -> dict[str, Any]:
    """Extract `archive` into `staging` and check it whole: manifest, every checksum, the
    database's integrity. Returns the manifest; raises BackupError saying what is wrong."""
    if not archive.is_file():
        raise BackupError(f"no backup at {archive}")
    try:
        sums = _extract(archive, staging)
        manifest = json.loads((staging / MANIFEST).read_text()) if MANIFEST in sums else None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        raise BackupError(f"{archive} is corrupt or truncated ({exc}); nothing restored") from None
    expected = _manifest_sums(manifest)
    if expected is None:
        raise BackupError(f"{archive} is not a Crowd-SFT backup (no valid {MANIFEST})")
    sums.pop(MANIFEST)
    if sums != expected or DB_NAME not in expected:
        bad = sorted(set(sums) ^ set(expected)) or [n for n in sums if sums[n] != expected[n]]
        raise BackupError(f"{archive} fails its checksums ({', '.join(bad[:3])}); nothing restored")
    for name in manifest["adapters"]:
        if not (staging / _safe_name(name)).exists():
            raise BackupError(f"{archive} lacks the adapter {name} its manifest lists")
    result = _check_database(staging / DB_NAME)
    if result != "ok":
        raise BackupError(f"the database in {archive} is damaged ({result}); nothing restored")
    return manifest


def _manifest_sums(manifest: object) -> dict[str, str] | None:
    """name -> sha256 from a well-formed manifest, else None."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    adapters = manifest.get("adapters")
    if not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters):
        return None
    try:
        return {name: entry["sha256"] for name, entry in manifest["files"].items()}
    except (KeyError, TypeError, AttributeError):
        return None


def _check_database(path: Path) -> str:
    """'ok' for an intact, migrated database; otherwise what is wrong."""
    conn = sqlite3.connect(path)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return result


def _live_files(data_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """What the restore replaces: the database with its WAL files, and clashing adapters."""
    names = [DB_NAME + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    names += list(manifest["adapters"])
    return [name for name in names if (data_dir / name).exists()]


def restore_backup(
    archive: Path, data_dir: Path, *, force: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Restore `archive` into `data_dir`; the replaced files are kept in `pre-restore-STAMP/`.

    Refuses to replace an existing database unless `force`. Returns the manifest plus
    `kept_in` (the folder holding the replaced files, or None)."""
    data_dir, archive = Path(data_dir), Path(archive)
    if (data_dir / DB_NAME).exists() and not force:
        raise BackupError(
            f"a database already exists at {data_dir / DB_NAME}; stop the app and pass --force"
            " to replace it (it is kept in a pre-restore folder)"
        )
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    # Staged inside the data dir: the same file system, so the final renames are atomic.
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        manifest = verify_backup(archive, staging)
        kept = _swap_in(data_dir, staging, manifest, data_dir / f"pre-restore-{stamp}")
    except BaseException:
        shutil.rmtree(data_dir if created else staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "kept_in": str(kept) if kept else None}


def _swap_in(data_dir: Path, staging: Path, manifest: dict[str, Any], aside: Path) -> Path | None:
    """Move the live files aside, then rename the staged ones in (adapters before the database,
    so the database never names a missing adapter). On failure, put the live files back."""
    replaced = _live_files(data_dir, manifest)
    moved: list[str] = []
    installed: list[str] = []
    try:
        for name in replaced:
            (aside / name).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / name).rename(aside / name)
            moved.append(name)
        for name in [*manifest["adapters"], DB_NAME]:
            (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).rename(data_dir / name)
            installed.append(name)
    except OSError as exc:
        for name in installed:
            _remove(data_dir / name)
        for name in moved:
            (aside / name).rename(data_dir / name)
        raise BackupError(f"cannot restore into {data_dir}: {exc}; nothing changed") from None
    return aside if moved else None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
