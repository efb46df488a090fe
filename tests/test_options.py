"""crowd.options: a tool's option for one of the app's settings (the studies' --epochs,
--learning-rate, --samples, ...) is built from the setting's declaration (crowd.config)."""

from __future__ import annotations

import argparse

import pytest

from crowd.config import ModelSettings, TrainingSettings
from crowd.options import Declared, OptionError


def test_an_option_built_from_a_declaration_takes_its_type_help_and_range():
    """The declaration's type, help and range, with the tool's own default."""
    parser = argparse.ArgumentParser()
    options = Declared(parser)
    options.add(TrainingSettings, "epochs", default=3)
    options.add(ModelSettings, "base_model", default=None)
    args = parser.parse_args(["--epochs", "5"])
    assert (args.epochs, args.base_model) == (5, None)
    assert "epochs of each round's LoRA training" in parser.format_help()
    options.check(args)
    with pytest.raises(OptionError, match="--epochs 0: must be an integer from 1 to 100"):
        options.check(parser.parse_args(["--epochs", "0"]))
    with pytest.raises(KeyError, match="lora_alpha is not a declared setting"):
        options.add(TrainingSettings, "lora_alpha")  # a constant, not read from the environment
