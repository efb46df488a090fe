"""`python -m crowd backup` and `python -m crowd restore`: the command line over `storage.backup`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crowd.config import ConfigError, load_settings
from storage.backup import BackupError, make_backup, restore_backup


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m crowd {command}")
    parser.add_argument("--data-dir", type=Path, help="data dir (default: CROWD_DATA_DIR)")
    if command == "backup":
        parser.description = "Snapshot the live database and the champion adapters."
        parser.add_argument("--out", required=True, type=Path, help="archive to write (.tar.gz)")
    else:
        parser.description = "Bring a backup back into the data dir (stop the app first)."
        parser.add_argument("archive", type=Path, help="a backup made by `crowd backup`")
        parser.add_argument("--force", action="store_true", help="replace an existing database")
    return parser


def main(argv: list[str]) -> int:
    """`python -m crowd backup --out FILE` / `python -m crowd restore FILE [--force]`:
    0 on success, 2 when refused (with the reason on stderr)."""
    command = argv[0]
    try:
        args = _parser(command).parse_args(argv[1:])
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        data_dir = args.data_dir or load_settings().data_dir
        if command == "backup":
            manifest = make_backup(data_dir, args.out)
            print(f"wrote {args.out}: {len(manifest['files'])} files")
            for name in manifest["missing_adapters"]:
                print(f"warning: champion adapter {name} is missing", file=sys.stderr)
        else:
            manifest = restore_backup(args.archive, data_dir, force=args.force)
            print(f"restored {args.archive} ({manifest['created_at']}) into {data_dir}")
            if manifest["kept_in"]:
                print(f"the replaced files are kept in {manifest['kept_in']}")
    except (BackupError, ConfigError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    return 0
