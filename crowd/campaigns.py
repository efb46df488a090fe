"""A campaign: its settings, declared once (`CampaignSpec`), who may contribute to it, its
set-up and the opening of its rounds. Pure bookkeeping over storage; no models here."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from crowd.campaign_fields import Declared, choice, declared, flag, lines, number, share, text
from crowd.emotions import GOEMOTIONS_LABELS
from crowd.groups import GROUPING_METHODS, regroup
from crowd.limits import Refused
from crowd.voices import parse_venues, venue_text
from storage import queries
from storage import rounds as store
from storage.rows import Campaign, Participant, Round
from storage.vocabulary import (
    JUDGES,
    MAX_GROUPS,
    MERGE_METHODS,
    POINTS_RULES,
    ROUND_POLICIES,
    TASKS,
    TRAINING_MODES,
)

DEFAULT_PROMPTS = [
    "Tell me about your day.",
    "Write a reddit comment.",
    "What do you think of rainy weekends?",
    "Give me some advice about a new job.",
]


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


DEFAULT_MEMORY_ROUNDS = 3  # a new campaign's window: growing into it is no news
MAX_MEMORY_ROUNDS = 100  # a window past the campaign's rounds is allowed: the round says so
MAX_HELDOUT_SHARE = 0.85
"""The held-out share's upper end. Each group keeps at least one correction to train on
whatever the share (`crowd.evaluation.split_heldout`), but past this the judging set outweighs
the training set six to one; 0.85 is also the slider's last step (0.05) below the 0.9 that
validation allowed before issue 31. The schema's CHECK is wider (< 1): SQLite cannot change a
CHECK without rebuilding the table, and the spec's range lies inside it."""

HF_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
"""A Hugging Face user or organisation name."""


def _hf_name(value: str) -> str:
    if not HF_NAME.match(value):
        raise ValueError("not a Hugging Face organisation name")
    return value


def _venues(value: str) -> str:
    return venue_text(parse_venues(value))


@dataclass(frozen=True)
class CampaignSpec:
    """Every setting an organizer edits, each declared once (`crowd.campaign_fields`): its
    default, range or choices, label, help and form part. `validate_campaign` checks changes
    against it, the organizer form is built and parsed from it (`crowd.ui.campaign_form`), a
    new campaign is stored with its defaults (`create_campaign`), and tests/test_campaign_spec.py
    compares it with the schema's CHECK constraints. A new setting: one field here, plus a
    migration that adds its column."""

    # Who may contribute (crowd.voices): pseudonyms are free, sign-ins cost something.
    require_login: bool = flag(
        False,
        "Require a Hugging Face sign-in to correct and review",
        "works on a Space with hf_oauth: true; anyone may still chat",
        "contributors",
    )
    hf_org: str | None = text(
        None,
        96,
        "…and membership of this Hugging Face organisation",
        "empty: any account",
        "contributors",
        optional=True,
        parse=_hf_name,
    )
    venues: str = text(
        "",
        5000,
        "Venues: networks where many people share one address (a classroom, a lab)",
        "one CIDR per line, e.g. 192.0.2.0/24. Each person there counts alone, but their "
        "reviews of each other do not establish trust.",
        "contributors",
        parse=_venues,
        max_lines=2,
    )
    name: str = text("Crowd-SFT campaign", 120, "Campaign name", "", "campaign")
    licence: str = text("CC-BY-4.0", 120, "Licence of the contributions", "", "campaign")
    task: str = choice("emotion", TASKS, "Task", "", "campaign")
    target_emotion: str | None = choice(
        "joy", GOEMOTIONS_LABELS, "Target emotion", "the emotion task's", "campaign", optional=True
    )
    n_groups: int = number(3, 1, MAX_GROUPS, "Groups", "from the next round", "campaign")
    prompts: list[str] = lines(
        DEFAULT_PROMPTS, 100, 500, "Suggested prompts", "one per line", "campaign"
    )
    round_policy: str = choice(
        "manual", ROUND_POLICIES, "Round closes", "by you, on a timer, or on a count", "rounds"
    )
    round_seconds: int | None = number(
        None, 10, 30 * 86400, "…after seconds", "the timer policy", "rounds", optional=True
    )
    round_corrections: int | None = number(
        None,
        1,
        100_000,
        "…after corrections per group",
        "the count policy",
        "rounds",
        optional=True,
    )
    grouping: str = choice("random", GROUPING_METHODS, "Regrouping", "", "rounds")
    points_rule: str = choice("paper", POINTS_RULES, "Points rule", "", "rounds")
    training_mode: str = choice("sft", TRAINING_MODES, "Training", "", "rounds")
    min_corrections: int = number(
        3, 1, 100_000, "Min corrections to train a group", "fewer: it sits the round out", "rounds"
    )
    heldout_share: float = share(
        0.2,
        0.0,
        MAX_HELDOUT_SHARE,
        "Held-out share",
        "of each group's corrections, kept to judge the models",
        "rounds",
        step=0.05,
    )
    win_margin: float = share(
        0.0,
        0.0,
        100.0,
        "Win margin",
        "metric units a candidate must beat the champion by",
        "rounds",
    )
    # Trust in the crowd's data (crowd.trust); a new campaign starts defended.
    reviews_on: bool = flag(
        True,
        "Peer review",
        "the server deals volunteers each other's corrections; rejected ones do not train, "
        "and only trusted ones judge",
        "trust",
    )
    min_reviews: int = number(2, 1, 20, "Reviews a verdict needs", "independent ones", "trust")
    person_cap: float = share(
        0.25,
        0.05,
        1.0,
        "Share cap per voice",
        "the most of a group's training one voice may supply (a voice is a network or an "
        "account); 1 = no cap",
        "trust",
        step=0.05,
    )
    hold_unreviewed: bool = flag(
        False,
        "Only endorsed corrections train",
        "with peer review on, unreviewed ones wait: safer, but less of the crowd's work trains",
        "trust",
    )
    # More and stronger candidates per round (crowd.rounds.candidates, docs/results/
    # candidates.md): on for a new campaign since the studies there (fear and anger at 0 %,
    # where one pooled model had won, now end closer than it). The union doubles a round's
    # training; the sequential judge never decodes more replies than the fixed one.
    union_candidate: bool = flag(
        True, "Union candidate", "one more, trained on every group's trusted data", "candidates"
    )
    union_continues: bool = flag(
        True,
        "…which goes on from the last round's union",
        "while nothing is crowned",
        "candidates",
    )
    memory_rounds: int = number(
        DEFAULT_MEMORY_ROUNDS,
        0,
        MAX_MEMORY_ROUNDS,
        "Memory",
        "earlier rounds whose trusted corrections the union trains on again (0 = off)",
        "candidates",
    )
    memory_groups: bool = flag(
        False,
        "…and each group's candidate on its members' earlier corrections",
        "",
        "candidates",
    )
    merge_method: str = choice(
        "ties_svd",
        MERGE_METHODS,
        "Merged candidate",
        "the group adapters merged by PEFT: off, or how",
        "candidates",
    )
    judge: str = choice(
        "sequential",
        JUDGES,
        "Judge",
        "emotion task: fixed replies per model, or in stages",
        "candidates",
    )


def campaign_settings() -> dict[str, Declared]:
    """Every campaign setting's declaration by name, in the spec's order."""
    return {f.name: declared(f) for f in fields(CampaignSpec)}


def validate_campaign(changes: dict) -> dict:
    """`changes` as stored (texts trimmed, venues normalized), or Refused naming the first
    setting that is unknown or outside its declared range or choices."""
    settings = campaign_settings()
    unknown = set(changes) - set(settings)
    if unknown:
        raise Refused(f"Unknown campaign setting(s): {', '.join(sorted(unknown))}.")
    return {name: settings[name].clean(name, value) for name, value in changes.items()}


SIGN_IN_FIRST = "This campaign asks contributors to sign in with Hugging Face first."
ORG_ONLY = (
    "This campaign takes corrections and reviews from members of the Hugging Face "
    "organisation {org} only: sign in with an account that belongs to it."
)


def not_a_contributor(campaign: Campaign) -> str:
    """Why someone `may_correct` refuses cannot correct or review in `campaign`."""
    org = campaign.get("hf_org")
    return ORG_ONLY.format(org=org) if org else SIGN_IN_FIRST


def may_correct(campaign: Campaign, participant: Participant) -> bool:
    """Whether `participant` may correct and review in `campaign`: anyone, unless the campaign
    requires a Hugging Face login and they joined without one, or requires membership of an
    organisation they did not belong to when they last joined (they may still chat)."""
    org = campaign.get("hf_org")
    if not (campaign.get("require_login") or org):
        return True
    if not participant.get("hf_username"):
        return False
    return not org or org in json.loads(participant.get("hf_orgs") or "[]")


def create_campaign(
    db: Database,
    spec: CampaignSpec,
    initial_adapter: Path | None,
    data_dir: Path | None,
    now: str,
) -> int:
    """A new active campaign with its first champion (the base, or `initial_adapter`, which
    lies in `data_dir`: None without one) and round 1 open. Returns the campaign id."""
    adapter = None
    if initial_adapter is not None:
        if data_dir is None:
            raise ValueError(f"{initial_adapter} must lie in the data dir, and none was given")
        adapter = str(initial_adapter.relative_to(data_dir))
    with db.atomic():
        campaign_id = store.add_campaign(db, now, **spec.__dict__)
        champion = store.add_version(db, campaign_id, now, adapter_path=adapter, status="champion")
        store.add_round(
            db,
            campaign_id,
            1,
            champion,
            now,
            _closes_at(spec.round_policy, spec.round_seconds, now),
        )
    return campaign_id


def _closes_at(policy: str, seconds: int | None, now: str) -> str | None:
    """When a round opened at `now` closes: `seconds` later on a timer, else never by itself."""
    if policy == "timer" and seconds:
        return (parse_time(now) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    return None


def open_next_round(
    db: Database, campaign: Campaign, previous: Round, now: str, rng: random.Random
) -> int:
    """Open round n+1 serving the previous round's champion, regrouping its members by the
    campaign's method. Returns the new round's id. Call inside a transaction."""
    round_id = store.add_round(
        db,
        campaign["id"],
        previous["number"] + 1,
        previous["champion_id"],
        now,
        _closes_at(campaign["round_policy"], campaign["round_seconds"], now),
    )
    people = sorted(queries.members(db, previous["id"]))
    if people:
        totals = store.points_totals(db, campaign["id"])
        groups = regroup(
            people,
            {p: totals.get(p, 0.0) for p in people},
            campaign["n_groups"],
            campaign["grouping"],
            previous["number"],
            100,
            rng,
        )
        for participant_id, group in groups.items():
            queries.add_membership(db, round_id, participant_id, group, now)
    return round_id
