"""`python -m crowd export`: the command line over `crowd.export`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crowd.config import ConfigError, load_settings
from crowd.export import ExportError, ExportOptions, export_dataset, export_zip


def _int_list(raw: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a comma-separated list of numbers"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crowd export", description="Export the labelled data of a campaign."
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write (new or empty)")
    parser.add_argument("--db", type=Path, help="database file (default: the data dir's)")
    parser.add_argument("--campaign", type=int, help="campaign id (default: the latest)")
    parser.add_argument("--rounds", type=_int_list, help="round numbers, e.g. 1,2")
    parser.add_argument("--groups", type=_int_list, help="group indices from 0, e.g. 0,2")
    parser.add_argument("--include-hidden", action="store_true", help="hidden ones into events")
    parser.add_argument("--include-banned", action="store_true", help="banned people's rows too")
    parser.add_argument("--zip", action="store_true", help="write OUT as one zip file instead")
    return parser


def main(argv: list[str]) -> int:
    """`python -m crowd export --out DIR [...]`: 0 on success, 2 on bad input (nothing written)."""
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    options = ExportOptions(
        campaign=args.campaign,
        rounds=args.rounds,
        groups=args.groups,
        include_hidden=args.include_hidden,
        include_banned=args.include_banned,
    )
    try:
        db = args.db if args.db else load_settings().db_path
        if args.zip:
            print(f"wrote {export_zip(db, args.out, **options)}")
            return 0
        counts = export_dataset(db, args.out, **options)
    except (ExportError, ConfigError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    return 0
