"""`python -m crowd backup` and `python -m crowd restore`: the command line over `storage.backup`
and `storage.restore`. The manifest is signed with CROWD_BACKUP_KEY, else CROWD_IDENTITY_SECRET,
else the data dir's key file; a restore checks it with those (never with anything in the
archive) and refuses an unsigned or tampered archive unless told `--insecure-unsigned`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from crowd.config import ConfigError, Settings, load_settings
from crowd.identity import backup_keys, backup_signer, key_file
from storage.backup import BackupError, make_backup
from storage.restore import MAX_BYTES, restore_backup


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m crowd {command}")
    parser.add_argument("--data-dir", type=Path, help="data dir (default: CROWD_DATA_DIR)")
    if command == "backup":
        parser.description = "Snapshot the live database, the champion adapters and the key file."
        parser.add_argument("--out", required=True, type=Path, help="archive to write (.tar.gz)")
        return parser
    parser.description = "Bring a backup back into the data dir (stop the app first)."
    parser.add_argument("archive", type=Path, help="a backup made by `crowd backup`")
    parser.add_argument("--force", action="store_true", help="replace an existing database")
    parser.add_argument(
        "--key-file", type=Path, help="a saved copy of the identity.key the backup was signed with"
    )
    parser.add_argument(
        "--insecure-unsigned",
        action="store_true",
        help="restore an unsigned or unverifiable archive (its key file is not restored)",
    )
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_BYTES, help="refuse an archive larger than this"
    )
    return parser


def _backup(settings: Settings, args: argparse.Namespace) -> None:
    if not settings.db_path.is_file():  # before the signer, which would create a key file
        raise BackupError(f"no database at {settings.db_path}")
    secret, signed_with = backup_signer(settings)
    manifest = make_backup(
        settings.data_dir,
        args.out,
        secret=secret,
        signed_with=signed_with,
        key_file=key_file(settings),
    )
    print(f"wrote {args.out}: {len(manifest['files'])} files, signed with {signed_with}")
    for name in manifest["missing_adapters"]:
        print(f"warning: champion adapter {name} is missing", file=sys.stderr)


def _restore(settings: Settings, args: argparse.Namespace) -> None:
    if args.key_file is not None and not args.key_file.is_file():
        raise BackupError(f"no key file at {args.key_file}")
    manifest = restore_backup(
        args.archive,
        settings.data_dir,
        keys=backup_keys(settings, args.key_file),
        force=args.force,
        insecure_unsigned=args.insecure_unsigned,
        max_bytes=args.max_bytes,
    )
    print(f"restored {args.archive} ({manifest['created_at']}) into {settings.data_dir}")
    if not manifest["signed"]:
        print("warning: the archive was not signed by a key you hold", file=sys.stderr)
    if manifest["kept_in"]:
        print(f"the replaced files are kept in {manifest['kept_in']}")


def main(argv: list[str]) -> int:
    """`python -m crowd backup --out FILE` / `python -m crowd restore FILE [--force]`:
    0 on success, 2 when refused (with the reason on stderr)."""
    command = argv[0]
    os.umask(0o077)  # every folder and file they make is the app user's only, as in app.py
    try:
        args = _parser(command).parse_args(argv[1:])
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = load_settings()
        if args.data_dir is not None:
            settings = replace(settings, data_dir=args.data_dir)
        (_backup if command == "backup" else _restore)(settings, args)
    except (BackupError, ConfigError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    return 0
