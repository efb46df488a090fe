"""`python -m crowd COMMAND ...`: the command-line tools. Each command lives in its own module
and exposes `main(argv) -> int`; this table only dispatches, importing the module on demand."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, what it does)
    "demo-round": ("crowd.cli.demo", "run one whole round on scripted volunteers"),
    "export": ("crowd.cli.export", "export the labelled data (TRL-ready JSONL, Parquet, card)"),
    "export-model": (
        "crowd.cli.export_model",
        "export the champion model (PEFT adapter or merged) with a model card",
    ),
    "round-job": (
        "crowd.cli.round_job",
        "train and judge a round from its bundle alone: `round-job BUNDLE OUT`",
    ),
    "backup": ("crowd.cli.backup", "snapshot the live database and champion adapters"),
    "restore": ("crowd.cli.backup", "bring a snapshot back"),
    "simulate": ("crowd.sim", "simulations: `simulate convergence` or `simulate grouping`"),
    "settings": ("crowd.cli.settings", "the settings (environment variables) as a Markdown table"),
    "models": ("crowd.cli.models", "convert the packaged default model into CROWD_MODELS_DIR"),
    "scorer": ("crowd.scoring.cli", "the emotion scorer: `scorer train --data FILE`"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m crowd COMMAND [options]\n\ncommands:")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:<12} {what}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
