"""Campaign set-up and the opening of rounds. Pure bookkeeping over storage; no models here."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlite_utils import Database

from crowd.groups import regroup
from storage import queries
from storage import rounds as store

GROUP_NAMES = (
    "Amber",
    "Blue",
    "Coral",
    "Dune",
    "Emerald",
    "Fern",
    "Gold",
    "Heather",
    "Indigo",
    "Jade",
    "Kiwi",
    "Lilac",
    "Mint",
    "Navy",
    "Olive",
    "Peach",
    "Quartz",
    "Rose",
    "Sky",
    "Teal",
    "Umber",
    "Violet",
    "Wheat",
    "Xanadu",
    "Yellow",
    "Zinc",
)
GROUP_COLOURS = (
    "#f59e0b",
    "#3b82f6",
    "#f87171",
    "#a16207",
    "#10b981",
    "#65a30d",
    "#eab308",
    "#a855f7",
    "#6366f1",
    "#14b8a6",
    "#84cc16",
    "#c084fc",
    "#34d399",
    "#1e3a8a",
    "#808000",
    "#fb923c",
    "#94a3b8",
    "#f43f5e",
    "#38bdf8",
    "#0d9488",
    "#92400e",
    "#7c3aed",
    "#d97706",
    "#16a34a",
    "#facc15",
    "#71717a",
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


@dataclass(frozen=True)
class CampaignSpec:
    """What an organizer sets. Validated by `crowd.service`; stored in `campaigns`."""

    name: str = "Crowd-SFT campaign"
    task: str = "emotion"
    target_emotion: str | None = "joy"
    n_groups: int = 3
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    round_policy: str = "manual"  # 'manual' | 'timer' | 'count'
    round_seconds: int | None = None
    round_corrections: int | None = None
    grouping: str = "random"
    points_rule: str = "paper"
    training_mode: str = "sft"
    min_corrections: int = 3
    heldout_share: float = 0.2
    win_margin: float = 0.0
    licence: str = "CC-BY-4.0"
    # Who may contribute (crowd.voices): pseudonyms are free, sign-ins cost something.
    require_login: bool = False  # corrections and reviews only from people signed in with HF
    hf_org: str | None = None  # ...who are also members of this Hugging Face organisation
    venues: str = ""  # CIDRs of classrooms or labs behind one router: each person counts alone
    # Trust in the crowd's data (crowd.trust); a new campaign starts defended.
    reviews_on: bool = (
        True  # peer review decides what trains (not rejected or contested) and judges (trusted)
    )
    min_reviews: int = 2  # independent reviews before a verdict
    person_cap: float = 0.25  # most of a group's training (and held-out set) one voice gives
    hold_unreviewed: bool = False  # with review on, only trusted corrections train
    # More and stronger candidates per round (crowd.rounds.candidates, docs/results/
    # candidates.md): each is one more candidate in the round's bundle. Off until the studies
    # of docs/results/candidates.md show on the dev grid that they help: the union alone
    # doubles a round's training.
    union_candidate: bool = False  # one more candidate trained on every group's trusted data
    union_continues: bool = False  # while nothing is crowned, the union goes on from its last
    memory_rounds: int = 0  # earlier rounds whose trusted corrections the union trains on again
    memory_groups: bool = False  # ... and each group's candidate its members' own earlier ones
    merge_method: str = "off"  # one more candidate merging the group adapters (MERGE_METHODS)
    judge: str = "fixed"  # emotion rounds: fixed replies per model, or in stages (JUDGES)


SIGN_IN_FIRST = "This campaign asks contributors to sign in with Hugging Face first."
ORG_ONLY = (
    "This campaign takes corrections and reviews from members of the Hugging Face "
    "organisation {org} only: sign in with an account that belongs to it."
)


def not_a_contributor(campaign: dict) -> str:
    """Why someone `may_correct` refuses cannot correct or review in `campaign`."""
    org = campaign.get("hf_org")
    return ORG_ONLY.format(org=org) if org else SIGN_IN_FIRST


def may_correct(campaign: dict, participant: dict) -> bool:
    """Whether `participant` may correct and review in `campaign`: anyone, unless the campaign
    requires a Hugging Face login and they joined without one, or requires membership of an
    organisation they did not belong to when they last joined (they may still chat)."""
    org = campaign.get("hf_org")
    if not (campaign.get("require_login") or org):
        return True
    if not participant.get("hf_username"):
        return False
    return not org or org in json.loads(participant.get("hf_orgs") or "[]")


def group_name(index: int) -> str:
    return GROUP_NAMES[index % len(GROUP_NAMES)]


UNION_NAME = "All groups"
MERGED_NAME = "Merged"


def candidate_name(kind: str | None, group_index: int | None) -> str:
    """How volunteers see a candidate: its group's name, or the union's or the merge's."""
    if kind == "union":
        return UNION_NAME
    if kind == "merged":
        return MERGED_NAME
    return group_name(group_index or 0)


def won_text(name: str) -> str:
    """'group Amber won', or what the union's or the merge's win reads as."""
    if name == UNION_NAME:
        return "the model trained on all groups' corrections together won"
    if name == MERGED_NAME:
        return "the merge of the groups' models won"
    return f"group {name} won"


def group_colour(index: int) -> str:
    return GROUP_COLOURS[index % len(GROUP_COLOURS)]


def create_campaign(
    db: Database, spec: CampaignSpec, initial_adapter: Path | None, data_dir: Path, now: str
) -> int:
    """A new active campaign with its first champion (the base, or `initial_adapter`) and
    round 1 open. Returns the campaign id."""
    with db.atomic():
        campaign_id = store.add_campaign(db, now, **spec.__dict__)
        adapter = str(initial_adapter.relative_to(data_dir)) if initial_adapter else None
        champion = store.add_version(db, campaign_id, now, adapter_path=adapter, status="champion")
        store.add_round(db, campaign_id, 1, champion, now, _closes_at(spec.__dict__, now))
    return campaign_id


def _closes_at(campaign: dict, now: str) -> str | None:
    if campaign["round_policy"] == "timer" and campaign.get("round_seconds"):
        return (parse_time(now) + timedelta(seconds=campaign["round_seconds"])).isoformat(
            timespec="seconds"
        )
    return None


def open_next_round(
    db: Database, campaign: dict, previous: dict, now: str, rng: random.Random
) -> int:
    """Open round n+1 serving the previous round's champion, regrouping its members by the
    campaign's method. Returns the new round's id. Call inside a transaction."""
    round_id = store.add_round(
        db,
        campaign["id"],
        previous["number"] + 1,
        previous["champion_id"],
        now,
        _closes_at(campaign, now),
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
