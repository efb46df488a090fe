"""Restore a backup, trusting nothing in it.

The archive is read once, as a stream, in the order `make_backup` writes it: the manifest first,
then the database, then the key file, then the adapters. Before any member is written:
- the manifest's HMAC must verify with a key from outside the archive (or the caller passes
  `insecure_unsigned`, and then the key file is never restored);
- every name it lists is `crowd.db`, `identity.key` or a file under `adapters/`, with no
  absolute or `..` part, and the total size fits under `max_bytes` and in the free space.
Each member must be a plain file (no link, FIFO or device) of exactly the size the manifest
gives; reading stops at that size, so a decompression bomb is refused before it fills the disk.
Adapters are accepted only under folders that the restored database's
`model_versions.adapter_path` names, and those paths must be relative and inside `adapters/`.
Only then are the live files moved aside (kept in `pre-restore-STAMP/`) and the new ones
renamed in. Any refusal leaves the data dir as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from storage.backup import (
    CHUNK,
    DB_NAME,
    FORMAT,
    KEY_NAME,
    MANIFEST,
    PRIVATE,
    VERSION,
    BackupError,
    signature_ok,
)

MAX_BYTES = 8 << 30  # the most a restore writes, all members together (8 GiB)
MAX_HEADER_BYTES = 64 << 10  # a pax or GNU long-name header: names and a few fields, never more
MAX_MANIFEST_BYTES = 1 << 20
MAX_KEY_BYTES = 4096
HEADROOM = 64 << 20  # free space kept beyond the restored files
ADAPTERS = "adapters"


def safe_relative(name: object) -> str | None:
    """`name` as a clean relative POSIX path, or None if absolute, empty, or with `..`."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return path.as_posix()


def adapter_folder(name: object) -> str | None:
    """A database's adapter path if it is a folder inside `adapters/`, else None."""
    clean = safe_relative(name)
    parts = clean.split("/") if clean else []
    return clean if len(parts) >= 2 and parts[0] == ADAPTERS else None


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses an extended header (pax, GNU long name or link) larger than MAX_HEADER_BYTES
    before tarfile reads it: tarfile reads such a header whole into memory, so a 1 MB archive
    claiming a 2 GB header took 2 GB and 21 s to refuse."""

    def _proc_member(self, tarfile_: tarfile.TarFile):
        if self.type in EXTENDED_HEADERS and self.size > MAX_HEADER_BYTES:
            raise tarfile.HeaderError(
                f"an extended tar header of {self.size:,} bytes (at most {MAX_HEADER_BYTES:,})"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]  # a private tarfile hook typeshed leaves out


EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


# --- the manifest ----------------------------------------------------------------------------


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    member = tar.next()
    if member is None or member.name != MANIFEST:
        raise BackupError(f"{archive} is not a Crowd-SFT backup ({MANIFEST} must come first)")
    if not member.isfile() or member.size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{archive} has a malformed {MANIFEST}")
    try:
        manifest = json.loads(_read_exactly(tar, member, member.size))
    except ValueError:
        raise BackupError(f"{archive} has a malformed {MANIFEST}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not a Crowd-SFT backup (no valid {MANIFEST})")
    return manifest


def _check_signature(manifest: dict, archive: Path, keys: list[bytes], insecure: bool) -> bool:
    """True when signed by one of `keys`; False when unsigned but `insecure` allows it."""
    if any(signature_ok(manifest, key) for key in keys):
        return True
    if insecure:
        return False
    source = manifest.get("signed_with") if isinstance(manifest.get("signed_with"), str) else None
    hint = f" (it says it was signed with {source[:60]})" if source else ""
    raise BackupError(
        f"{archive} is unsigned or its signature does not match{hint}: set CROWD_BACKUP_KEY or"
        " CROWD_IDENTITY_SECRET to the key it was made with, or pass --insecure-unsigned to"
        " restore it anyway (the key file is then not restored); nothing restored"
    )


def _expected_files(manifest: dict, archive: Path) -> dict[str, dict]:
    """name -> {sha256, bytes} for every member the manifest lists, each name checked."""
    files = manifest.get("files")
    if manifest.get("version") != VERSION or not isinstance(files, dict) or DB_NAME not in files:
        raise BackupError(
            f"{archive} is not a version {VERSION} Crowd-SFT backup; nothing restored"
        )
    for name, entry in files.items():
        allowed = name in (DB_NAME, KEY_NAME) or adapter_folder(name)
        if not allowed or safe_relative(name) != name:
            raise BackupError(
                f"{archive} lists {str(name)[:80]!r}, which a backup never holds; nothing restored"
            )
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
            and entry["bytes"] >= 0
        ):
            raise BackupError(f"{archive} has a malformed entry for {name!r}; nothing restored")
    return files


def _check_room(
    files: dict[str, dict], data_dir: Path, max_bytes: int, free_bytes: Callable[[Path], int]
) -> None:
    total = sum(entry["bytes"] for entry in files.values())
    if total > max_bytes:
        raise BackupError(
            f"the backup would write {total:,} bytes, over the {max_bytes:,}-byte"
            " limit of a restore (--max-bytes); nothing restored"
        )
    free = free_bytes(data_dir)
    if total + HEADROOM > free:
        raise BackupError(
            f"the backup needs {total:,} bytes but {data_dir} has {free:,} free; nothing restored"
        )


# --- the members -----------------------------------------------------------------------------


def _read_exactly(tar: tarfile.TarFile, member: tarfile.TarInfo, size: int) -> bytes:
    source = tar.extractfile(member)
    data = source.read(size + 1) if source else b""
    if len(data) != size:
        raise BackupError(f"{member.name!r} is not the size its header gives")
    return data


def _copy_member(source: IO[bytes], target: Path, size: int) -> str:
    """Copy exactly `size` bytes into a new 0600 file; return their SHA-256. Never reads past
    `size`, so a member cannot write more than the manifest allows."""
    digest, left = hashlib.sha256(), size
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE), "wb") as sink:
        while left > 0:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise BackupError(f"{target.name!r} ends early")
            digest.update(chunk)
            sink.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


class _Reader:
    """Reads the members after the manifest, checking each before and while it is written."""

    def __init__(self, archive: Path, staging: Path, files: dict[str, dict]):
        self.archive, self.staging, self.files = archive, staging, files
        self.seen: set[str] = set()
        self.adapter_dirs: set[str] | None = None  # known once the database is in

    def refuse(self, what: str) -> BackupError:
        return BackupError(f"{self.archive}: {what}; nothing restored")

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        if not member.isfile():  # links, FIFOs, devices, folders: a backup holds files only
            raise self.refuse(f"{name[:80]!r} is not a plain file")
        entry = self.files.get(name)
        if entry is None or name in self.seen:
            raise self.refuse(f"{name[:80]!r} is not in the signed manifest (or comes twice)")
        if member.size != entry["bytes"]:
            raise self.refuse(
                f"{name!r} is {member.size:,} bytes, the manifest says {entry['bytes']:,}"
            )
        if name != DB_NAME:
            self._check_place(name)
        source = tar.extractfile(member)
        if (
            source is None
            or _copy_member(source, self.staging / name, member.size) != entry["sha256"]
        ):
            raise self.refuse(f"{name!r} fails its checksum")
        self.seen.add(name)
        if name == DB_NAME:
            self.adapter_dirs = restored_adapter_dirs(self.staging / DB_NAME, self.archive)
        elif name == KEY_NAME and not _looks_like_key(self.staging / KEY_NAME):
            raise self.refuse(f"{KEY_NAME} is not a key")

    def _check_place(self, name: str) -> None:
        if self.adapter_dirs is None:
            raise self.refuse(f"{name!r} comes before the database")
        if name != KEY_NAME and not any(name.startswith(d + "/") for d in self.adapter_dirs):
            raise self.refuse(f"{name!r} is not in an adapter folder the database names")

    def finish(self) -> None:
        missing = sorted(set(self.files) - self.seen)
        if missing:
            raise self.refuse(f"it lacks {', '.join(missing[:3])}, which its manifest lists")


def _looks_like_key(path: Path) -> bool:
    text = path.read_bytes().strip()
    return 16 <= len(text) <= MAX_KEY_BYTES and all(33 <= byte < 127 for byte in text)


def restored_adapter_dirs(db: Path, archive: Path) -> set[str]:
    """The adapter folders the restored database names; refuses a damaged database, one that
    is not a migrated Crowd-SFT database, or one naming an adapter outside `adapters/`."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()
        paths = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT adapter_path FROM model_versions WHERE adapter_path IS NOT NULL"
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise BackupError(
            f"the database in {archive} is damaged or not ours ({exc}); nothing restored"
        ) from None
    finally:
        conn.close()
    if check != "ok":
        raise BackupError(f"the database in {archive} is damaged ({check}); nothing restored")
    bad = [p for p in paths if adapter_folder(p) != p]
    if bad:
        raise BackupError(
            f"the database in {archive} names the adapter path {str(bad[0])[:80]!r},"
            " outside the data dir's adapters/ folder; nothing restored"
        )
    return set(paths)


# --- restore ---------------------------------------------------------------------------------


def verify_backup(
    archive: Path,
    staging: Path,
    *,
    keys: list[bytes],
    insecure_unsigned: bool = False,
    max_bytes: int = MAX_BYTES,
    free_bytes: Callable[[Path], int] | None = None,
) -> dict[str, Any]:
    """Read `archive` into `staging`, checking everything (see the module's docstring).
    Returns the manifest plus `signed` (bool); raises BackupError saying what is wrong."""
    if not archive.is_file():
        raise BackupError(f"no backup at {archive}")
    free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
    try:
        with tarfile.open(archive, "r|gz", tarinfo=_BoundedTarInfo) as tar:
            manifest = _read_manifest(tar, archive)
            signed = _check_signature(manifest, archive, keys, insecure_unsigned)
            files = _expected_files(manifest, archive)
            _check_room(files, staging, max_bytes, free_bytes)
            reader = _Reader(archive, staging, files)
            while (member := tar.next()) is not None:  # iterating would replay the manifest
                reader.member(tar, member)
            reader.finish()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BackupError(f"{archive} is corrupt or truncated ({exc}); nothing restored") from None
    return {**manifest, "signed": signed}


def _installs(manifest: dict[str, Any], staging: Path, archive: Path) -> list[str]:
    """What the restore renames into the data dir: adapters first, then the key file (signed
    backups only), then the database, so the database never names a missing adapter."""
    adapters = manifest.get("adapters")
    named = restored_adapter_dirs(staging / DB_NAME, archive)
    if not isinstance(adapters, list) or any(a not in named for a in adapters):
        raise BackupError(f"{archive} lists adapters its database does not name; nothing restored")
    for adapter in adapters:
        if not (staging / adapter).is_dir():
            raise BackupError(f"{archive} lacks the adapter {adapter} its manifest lists")
    key = [KEY_NAME] if manifest["signed"] and (staging / KEY_NAME).is_file() else []
    return [*adapters, *key, DB_NAME]


def restore_backup(
    archive: Path,
    data_dir: Path,
    *,
    keys: list[bytes],
    force: bool = False,
    insecure_unsigned: bool = False,
    max_bytes: int = MAX_BYTES,
    free_bytes: Callable[[Path], int] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Restore `archive` into `data_dir`; the replaced files are kept in `pre-restore-STAMP/`.

    `keys` are the secrets a genuine backup may be signed with. Refuses to replace an existing
    database unless `force`. Returns the manifest plus `signed`, `installed` and `kept_in` (the
    folder holding the replaced files, or None)."""
    data_dir, archive = Path(data_dir), Path(archive)
    if (data_dir / DB_NAME).exists() and not force:
        raise BackupError(
            f"a database already exists at {data_dir / DB_NAME}; stop the app and pass --force"
            " to replace it (it is kept in a pre-restore folder)"
        )
    created = not data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    # Staged inside the data dir: the same file system, so the final renames are atomic.
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        manifest = verify_backup(
            archive,
            staging,
            keys=keys,
            insecure_unsigned=insecure_unsigned,
            max_bytes=max_bytes,
            free_bytes=free_bytes,
        )
        installs = _installs(manifest, staging, archive)
        kept = _swap_in(data_dir, staging, installs, data_dir / f"pre-restore-{stamp}")
    except BaseException:
        shutil.rmtree(data_dir if created else staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return {**manifest, "installed": installs, "kept_in": str(kept) if kept else None}


def _live_files(data_dir: Path, installs: list[str]) -> list[str]:
    """What the restore replaces: the database with its WAL files, and what it installs."""
    names = [*installs, *(DB_NAME + suffix for suffix in ("-wal", "-shm", "-journal"))]
    return [name for name in dict.fromkeys(names) if os.path.lexists(data_dir / name)]


def _swap_in(data_dir: Path, staging: Path, installs: list[str], aside: Path) -> Path | None:
    """Move the live files aside, then rename the staged ones in. On failure, put the live
    files back."""
    replaced = _live_files(data_dir, installs)
    moved: list[str] = []
    installed: list[str] = []
    try:
        for name in replaced:
            (aside / name).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / name).rename(aside / name)
            moved.append(name)
        for name in installs:
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
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
