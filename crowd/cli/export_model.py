"""`python -m crowd export-model`: the command line over `crowd.model_export`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from crowd.config import ConfigError, load_settings
from crowd.hub import Hub
from crowd.model_export.champion import ModelExportError
from crowd.model_export.folder import export_model
from crowd.model_export.push import PushFailed, PushTarget, check_repo_id, connect_hub


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crowd export-model",
        description="Export the champion after a finished round: a PEFT adapter folder (or, "
        "with --merged, the full model), its tokenizer and chat template, a model card and the "
        "matching data export.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write (new or empty)")
    parser.add_argument("--round", type=int, help="round number (default: the last finished)")
    parser.add_argument("--campaign", type=int, help="campaign id (default: the active one)")
    parser.add_argument("--merged", action="store_true", help="merge the adapter into the base")
    parser.add_argument("--data-dir", type=Path, help="data dir (default: CROWD_DATA_DIR)")
    parser.add_argument(
        "--push-to-hub", metavar="OWNER/NAME", help="also upload it (needs HF_TOKEN); private"
    )
    parser.add_argument("--public", action="store_true", help="with --push-to-hub: publish it")
    return parser


def main(argv: list[str], make_hub: Callable[[str], Hub] | None = None) -> int:
    """0 on success; 2 on bad input, 1 when the upload failed; nothing is written on failure.
    `make_hub(token)` replaces huggingface_hub's HfApi (tests push to a folder on disk)."""
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse has printed the usage error
        return int(exc.code or 0)
    try:
        settings = load_settings()
        if args.data_dir:
            settings = replace(settings, data_dir=args.data_dir)
        push = None
        if args.public and not args.push_to_hub:
            raise ModelExportError("--public only applies with --push-to-hub OWNER/NAME")
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)
            hub = connect_hub(settings.hf_token, make_hub)
            push = PushTarget(args.push_to_hub, hub, public=args.public)
        facts = export_model(
            settings,
            args.out,
            campaign=args.campaign,
            round_number=args.round,
            merged=args.merged,
            push=push,
        )
    except (ModelExportError, ConfigError) as exc:
        print(f"export-model: {exc}", file=sys.stderr)
        return 2
    except PushFailed as exc:
        print(f"export-model: {exc}; nothing was written", file=sys.stderr)
        return 1
    what = "merged model" if args.merged else "adapter"
    print(
        f"wrote {args.out}: the {what} of v{facts.version_id}, champion after round "
        f"{facts.round_number}"
    )
    if push is not None:
        visibility = "public" if push.public else "private"
        print(f"pushed to https://huggingface.co/{push.repo_id} ({visibility})")
    return 0
