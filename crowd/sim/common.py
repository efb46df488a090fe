"""What the simulation studies (convergence, poisoning) share: their models and round engines
(built as the app builds its own), the run's emotion scorer, the CPU threads torch may use, and
the check that a run folder holds one configuration, and the options a study takes for campaign
settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crowd.campaign_fields import Declared as Setting
from crowd.campaign_fields import declared
from crowd.campaigns import CampaignSpec
from crowd.limits import Refused
from crowd.options import KIND, OptionError

if TYPE_CHECKING:
    from crowd.config import Settings
    from crowd.evaluation import Evaluator
    from crowd.metrics import Score
    from crowd.options import Declared
    from crowd.rounds.bundle import JudgingSettings
    from crowd.rounds.engine import RoundEngine
    from crowd.rounds.job import Kit
    from crowd.training.trainer import TRLTrainer

TRAINED_SCORER = "scorer.npz"  # in the run folder: the head trained on --data's scores
PAPER_SAMPLES = 50  # replies per model per judgement in the paper
PAPER_EPOCHS = 3  # the OpenAI fine-tuning API's default for a set of 100 or more items ...
PAPER_MIN_EXAMPLES = 100  # ... and its rule for smaller sets (TrainingSettings.min_examples)


class Recipe(Protocol):
    """What a study's configuration says about its models (both studies' configs have it)."""

    @property
    def base_model(self) -> str: ...
    @property
    def epochs(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def min_examples(self) -> int: ...
    @property
    def samples(self) -> int: ...  # replies per model when a round judges its candidates
    @property
    def max_new_tokens(self) -> int: ...
    @property
    def batch_size(self) -> int: ...


def add_model_options(options: Declared) -> None:
    """The options both studies take from the app's settings (crowd.options: type, range and
    help from each setting's declaration), with the paper's recipe as their defaults: the base
    model, each fine-tune's epochs, examples and learning rate, and how a round judges."""
    from crowd.config import ModelSettings, Settings, TrainingSettings

    options.add(
        TrainingSettings,
        "epochs",
        default=PAPER_EPOCHS,
        help="epochs per fine-tune (default 3, the OpenAI fine-tuning API's)",
    )
    options.add(
        TrainingSettings,
        "min_examples",
        default=PAPER_MIN_EXAMPLES,
        help="train each model on at least this many examples in all, with more "
        "epochs for small segments: the OpenAI fine-tuning API's rule, which the "
        "paper used (default 100: 33 items get 4 epochs, 22 get 5, 15 get 7); "
        "0 = always --epochs",
    )
    options.add(
        TrainingSettings,
        "learning_rate",
        default=None,
        help="learning rate of each fine-tune (default: the app's, CROWD_LEARNING_RATE)",
    )
    options.add(ModelSettings, "base_model", default=None, help="default: the app's base model")
    options.add(
        Settings,
        "eval_samples",
        "--samples",
        default=PAPER_SAMPLES,
        help="replies per model when a round picks its winner (the paper: 50)",
    )
    options.add(ModelSettings, "max_new_tokens", default=48)
    options.add(
        ModelSettings, "max_batch", "--batch-size", default=32, help="replies decoded together"
    )
    options.add(
        Settings,
        "scorer",
        default=None,
        help="'default', 'hub:<id>' or a saved head; default: a head trained on "
        "--data's reference scores (OUT/scorer.npz), or the app's scorer when "
        "the file has none",
    )


def study_kit(
    settings: Settings,
    config: Recipe,
    trainer_class: type[TRLTrainer] | None = None,
    evaluator_class: type[Evaluator] | None = None,
) -> Kit:
    """The run's trainer and judge, loaded once for every round of every arm: the app's
    builder (crowd.rounds.job.build_kit) with the run's base model, training and judging."""
    from crowd.rounds.job import build_kit

    training = replace(
        settings.training,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=config.seed,
        min_examples=config.min_examples,
    )
    return build_kit(
        config.base_model,
        training,
        settings.models_dir,
        settings.model.device,
        study_judging(config),
        trainer_class=trainer_class,
        evaluator_class=evaluator_class,
    )


def study_engine(
    settings: Settings, config: Recipe, kit: Kit, scorer_for: Callable[[int], Any]
) -> RoundEngine:
    """A round engine over `settings.data_dir` on the run's `kit`: the app's builder
    (crowd.rounds.engine.build_engine), the `thread` runner, the run's judging."""
    from crowd.campaigns import utcnow
    from crowd.rounds.engine import build_engine

    return build_engine(
        settings, utcnow, kit=kit, judging=study_judging(config), scorer_for=scorer_for
    )


def study_judging(config: Recipe) -> JudgingSettings:
    """How a run's rounds judge their candidates: its samples, reply length, batch and seed,
    with the app's crowning rule (crowd.rounds.judge.CROWN_Z)."""
    from crowd.rounds.bundle import JudgingSettings
    from crowd.rounds.judge import CROWN_Z

    return JudgingSettings(
        samples=config.samples,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        seed=config.seed,
        crown_z=CROWN_Z,
    )


def on_the_reference(
    evaluator: Evaluator, names: list[str], scorer: Any, target: Any, recipe: Recipe, samples: int
) -> list[Score]:
    """The named models' `samples` replies each to the study's one prompt, scored against
    `target`, on the run's own seed: the same replies whichever round the evaluator judged
    last (a round judges on seeds of its own, JudgingSettings.for_round)."""
    from crowd.evaluation import EvalSet
    from crowd.sim.convergence_rounds import CHAT

    reference = EvalSet("emotion", prompts=[CHAT], target=target, scorer=scorer, seed=recipe.seed)
    return evaluator.evaluate(reference, names, samples=samples)


def scorer_spec(scorer: str | None, data: Path, out: Path, settings: Settings) -> str:
    """`scorer` if given; else a head trained on `data`'s reference `scores` (OUT/scorer.npz),
    which ranks candidates as the paper's scorer does (docs/results/convergence.md); else, for
    a file without scores, the app's scorer."""
    from crowd.scoring.cli import read_scored

    if scorer:
        return scorer
    try:
        read_scored(data)
    except ValueError:
        return settings.scorer
    return str(out / TRAINED_SCORER)


def train_scorer(data: Path, path: Path, show: Callable[[str, bool], None]) -> None:
    """The default head (crowd.scoring.DEFAULT_HEAD) fitted on the file's texts and reference
    vectors plus the seed set: `python -m crowd scorer train --data FILE --out PATH`."""
    from crowd.scoring.cli import train
    from crowd.scoring.scorers import DEFAULT_HEAD

    show(f"training the emotion scorer on the reference scores of {data} ...", True)
    partial = path.with_name(path.stem + ".partial.npz")
    train([data], partial, True, DEFAULT_HEAD)
    partial.replace(path)  # a killed run leaves no half-written head behind


def set_threads(threads: int | None) -> None:
    """Torch's CPU threads (None or 0: torch's own default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def check_resume(
    out: Path, config, study: str, judging_only: frozenset | set = frozenset()
) -> None:
    """A run folder holds one configuration (a dataclass, stored as OUT/run.json); refuse to mix
    another into it. Settings in `judging_only` may change between invocations; a setting added
    after a run was started reads as its default there."""
    import json
    from dataclasses import MISSING, asdict, fields

    from crowd.sim.convergence_data import StudyInputError

    path = out / "run.json"
    if not path.exists():
        return
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        raise StudyInputError(f"{path} is not a {study} run's settings file")
    wanted = json.loads(json.dumps(asdict(config)))
    defaults = {f.name: f.default for f in fields(config) if f.default is not MISSING}
    changed = sorted(
        k for k in wanted if k not in judging_only and stored.get(k, defaults.get(k)) != wanted[k]
    )
    if changed:
        raise StudyInputError(
            f"{out} holds a run with other settings ({', '.join(changed)}); "
            "use a new --out or the same settings"
        )


def campaign_options(
    parser: argparse.ArgumentParser,
    flags: dict[str, str],
    defaults: dict[str, Any] | None = None,
    **help: str,
) -> None:
    """A study's options for campaign settings (crowd.campaigns.CampaignSpec): `flags` maps
    each setting to its option. Type, default and help come from the setting's one declaration
    (a flag is on/off); `defaults` may differ for a study that follows another protocol, and
    `help` may say more for a setting. Read the parsed values back with `campaign_values`,
    which checks them against the same declaration."""
    for name, flag in flags.items():
        field, setting = _campaign_field(name)
        default = (defaults or {}).get(name, field.default)
        text = help.get(name) or f"{setting.label.strip('…. ')}: {setting.help}".rstrip(": ")
        if setting.kind == "flag":
            text += f" (the campaign setting {name})"
            on = "on" if default else "off"
            parser.add_argument(flag, choices=("on", "off"), default=on, help=text)
        else:
            text += f"; {setting.allowed} (the campaign setting {name})"
            kind = KIND.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=default, help=text)


def campaign_values(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """The settings `campaign_options` added, as a campaign stores them; OptionError names the
    option and what its setting accepts when a value is outside the declaration."""
    values = {}
    for name, flag in flags.items():
        _, setting = _campaign_field(name)
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if setting.kind == "flag":
            value = value == "on"
        try:
            values[name] = setting.clean(name, value)
        except Refused:
            raise OptionError(f"{flag} {value}: must be {setting.allowed}") from None
    return values


def _campaign_field(name: str) -> tuple[Field, Setting]:
    field = next(f for f in fields(CampaignSpec) if f.name == name)
    return field, declared(field)
