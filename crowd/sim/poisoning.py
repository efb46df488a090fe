"""`python -m crowd simulate poisoning`: does peer review with per-person caps keep a
crowd-trained model on course when part of the crowd is hostile?

For one emotion of a neighbourhoods file (crowd.sim.convergence_data's format), under --out:

  1. the crowd: --volunteers people, round(volunteers x --adversaries) of them adversaries
     split over --mix (flooder, saboteur, random, ring, sybil-ring, many-sources;
     crowd.sim.poisoning_crowd says what each does), the rest honest; each adversary slot
     acts as much as a person, so --adversaries is also about the adversaries' share of the
     crowd's actions, except for a ring on one network, which is dealt fewer review items
     (never its own voice's: 50 % of the crowd made 36 % of the actions, 67 % made 46 %);
     the summary's adversary_action_share measures it. Every volunteer acts through the real
     CrowdService (join, send, another, rewrite, label, choose) and reviews through the real
     Reviews (the queue the server deals, review), from an address of its own network (the
     sybil ring's pseudonyms share one) and, with --sign-in, a Hugging Face account of its own
     (the ring has --ring-accounts); the same seed gives the same actions in every arm.
  2. defended arm (OUT/defended): the campaign defaults: reviews on (--min-reviews), each
     person at most --person-cap of a group's training; undefended arm (OUT/undefended): reviews
     off, no cap (the loop before "Trustworthy crowd data"); --sign-in and --hold-unreviewed
     apply to the defended arm's campaign. --rounds rounds each, closed by
     the real Organizer and run by the real worker, engine, TRLTrainer and Evaluator.
  3. pooled (OUT/pooled): one model trained once from the base on every SFT example that all
     the volunteers' corrections teach, at the defended arm's total example-passes.
  4. the clean reference: every round's champion of both arms and the pooled model, judged
     together by the mean L2 distance of --final-samples replies to the centroid of the target
     neighbourhood's scorer vectors (the crowd never touches it), with standard errors.

Resumes: finished rounds are kept in each arm's database, an interrupted round's crowd resumes
from its journal, the pooled adapter is trained once and a judgement is kept in OUT/judged.json.
Writes OUT/results.csv and OUT/poisoning.png and prints one JSON line last. Exit 2 on bad input
(nothing written), 1 if a round fails (rerun to resume).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from crowd.config import ModelSettings, Settings
from crowd.options import Declared, OptionError
from crowd.sim.common import add_model_options, campaign_options, campaign_values
from crowd.sim.convergence_data import (
    Neighbourhood,
    StudyInputError,
    pick_emotions,
    read_neighbourhoods,
)
from crowd.sim.poisoning_crowd import ADVERSARIES, assign_roles, place
from storage.vocabulary import POINTS_RULES

if TYPE_CHECKING:
    from crowd.sim.poisoning_study import PoisonConfig

DEFAULT_MIX = "flooder=1,saboteur=1,random=1,ring=1"
CANDIDATE_FLAGS = {  # issue 28's campaign settings, in both arms
    "union_candidate": "--union",
    "union_continues": "--union-continues",
    "memory_rounds": "--memory",
    "memory_groups": "--memory-groups",
    "merge_method": "--merge",
    "judge": "--judge",
}


def _options() -> Declared:
    p = argparse.ArgumentParser(
        prog="python -m crowd simulate poisoning", description=__doc__.split("\n\n")[0]
    )
    options = Declared(p)
    p.add_argument("--data", type=Path, required=True, help="neighbourhoods JSONL")
    p.add_argument("--emotion", required=True, help="the target emotion")
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--volunteers", type=int, default=30)
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--adversaries", type=float, default=0.3, help="share of the crowd, [0, 1)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"adversary weights (default {DEFAULT_MIX})")
    p.add_argument("--seed", type=int, default=0)
    options.add(
        ModelSettings,
        "threads",
        default=None,
        help="torch CPU threads; 2 or more: two lanes (processes) of half as many each",
    )
    p.add_argument("--reviews", type=int, default=8, help="reviews per volunteer per round")
    p.add_argument("--flood", type=int, default=4, help="messages a flooder sends per round")
    p.add_argument("--noise", type=float, default=0.1, help="honest volunteers' error rate")
    p.add_argument("--min-reviews", type=int, default=2, help="defended arm's reviews per verdict")
    p.add_argument("--person-cap", type=float, default=0.25, help="defended arm's per-person cap")
    p.add_argument("--points-rule", default="shapley", help="both arms' points rule")
    p.add_argument(
        "--sign-in",
        action="store_true",
        help="everyone joins with a Hugging Face account; the defended campaign requires it",
    )
    p.add_argument("--ring-accounts", type=int, default=1, help="the ring's accounts (sign-in)")
    p.add_argument(
        "--hold-unreviewed",
        action="store_true",
        help="defended arm: only corrections trusted by independent reviews train",
    )
    p.add_argument("--final-samples", type=int, default=200, help="replies on the reference")
    add_model_options(options)
    campaign_options(p, CANDIDATE_FLAGS)
    return options


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in ADVERSARIES:
            raise StudyInputError(f"--mix: {name!r} is not one of {', '.join(ADVERSARIES)}")
        try:
            mix[name] = float(weight or 1)
        except ValueError:
            raise StudyInputError(f"--mix: {part.strip()!r} needs NAME=WEIGHT") from None
        if mix[name] < 0:
            raise StudyInputError(f"--mix: {name}'s weight must be 0 or more")
    if sum(mix.values()) <= 0:
        raise StudyInputError("--mix: at least one weight must be positive")
    return mix


def _check_numbers(a: argparse.Namespace) -> None:
    for name in ("volunteers", "groups", "rounds", "final_samples", "min_reviews", "flood"):
        if getattr(a, name) < 1:
            raise StudyInputError(f"--{name.replace('_', '-')} must be at least 1")
    if a.reviews < 0:
        raise StudyInputError("--reviews must be 0 or more")
    if a.volunteers < a.groups:
        raise StudyInputError(f"--volunteers {a.volunteers} cannot fill {a.groups} groups")
    if not 0 <= a.adversaries < 1:
        raise StudyInputError("--adversaries is a share of the crowd in [0, 1)")
    if not 0 <= a.noise <= 0.5:
        raise StudyInputError("--noise must lie in [0, 0.5]")
    if not 0 < a.person_cap <= 1:
        raise StudyInputError("--person-cap must lie in (0, 1]")
    if a.points_rule not in POINTS_RULES:
        raise StudyInputError(f"--points-rule must be one of {', '.join(POINTS_RULES)}")
    if a.ring_accounts < 1:
        raise StudyInputError("--ring-accounts must be at least 1")


def _config(
    a: argparse.Namespace, settings: Settings
) -> tuple[dict[str, Neighbourhood], PoisonConfig]:
    from crowd.sim.common import scorer_spec
    from crowd.sim.poisoning_study import PoisonConfig

    _check_numbers(a)
    hoods = read_neighbourhoods(a.data)
    hood = pick_emotions(hoods, [a.emotion], a.data)[0]
    if len(hoods) < 2 and a.adversaries > 0:
        raise StudyInputError(f"{a.data}: adversaries need a second emotion's neighbourhood")
    if len(hood.neighbours) < 2:
        raise StudyInputError(f"{a.emotion}: needs at least 2 neighbours")
    return hoods, PoisonConfig(
        data_sha256=hashlib.sha256(a.data.read_bytes()).hexdigest(),
        emotion=a.emotion,
        volunteers=a.volunteers,
        groups=a.groups,
        rounds=a.rounds,
        adversaries=a.adversaries,
        mix=parse_mix(a.mix),
        seed=a.seed,
        scorer=scorer_spec(a.scorer, a.data, a.out, settings),
        base_model=a.base_model or settings.model.base_model,
        epochs=a.epochs,
        min_examples=a.min_examples,
        learning_rate=a.learning_rate or settings.training.learning_rate,
        samples=a.samples,
        final_samples=a.final_samples,
        max_new_tokens=a.max_new_tokens,
        batch_size=a.batch_size,
        reviews=a.reviews,
        flood=a.flood,
        noise=a.noise,
        min_reviews=a.min_reviews,
        person_cap=a.person_cap,
        points_rule=a.points_rule,
        sign_in=a.sign_in,
        ring_accounts=a.ring_accounts,
        hold_unreviewed=a.hold_unreviewed,
        candidates=campaign_values(a, CANDIDATE_FLAGS),
    )


def show(line: str, final: bool) -> None:
    if sys.stdout.isatty():
        print(f"\r{line:<100}", end="\n" if final else "", flush=True)
    else:
        print(line, flush=True)


def main(argv: list[str]) -> int:
    """argv[0] is 'poisoning'."""
    import torch

    from crowd.config import ConfigError, load_settings
    from crowd.sim.common import TRAINED_SCORER, check_resume, set_threads, train_scorer
    from crowd.sim.convergence_rounds import SimulationError
    from crowd.sim.poisoning_run import Lane, run

    options = _options()
    args = options.parser.parse_args(argv[1:])
    try:
        options.check(args)
        settings = load_settings()
        hoods, config = _config(args, settings)
        check_resume(args.out, config, "poisoning", {"final_samples"})
        args.out.mkdir(parents=True, exist_ok=True)  # the first write
    except (StudyInputError, OptionError, ConfigError, OSError) as exc:
        print(f"simulate poisoning: {exc}", file=sys.stderr)
        return 2
    (args.out / "run.json").write_text(json.dumps(asdict(config), indent=1))
    set_threads(args.threads or settings.model.threads)
    head = args.out / TRAINED_SCORER
    if config.scorer == str(head) and not head.exists():
        train_scorer(args.data, head, show)
    crowd = place(
        assign_roles(config.volunteers, config.adversaries, config.mix),
        config.sign_in,
        config.ring_accounts,
    )
    try:
        whole = Lane(config, hoods, crowd, args.out, settings, show, torch.get_num_threads())
        summary = run(whole)
    except SimulationError as exc:
        print(f"simulate poisoning: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0
