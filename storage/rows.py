"""The shapes of the rows that storage returns: one TypedDict per table the rest of the code
reads (participants, conversations, messages, corrections, reviews, rounds, model versions,
jobs, campaigns), and one per joined read that adds columns to a table's row.

They are TypedDicts, not dataclasses, because a row stays the plain dict sqlite-utils gives:
nothing is copied on the way out, `row["x"]` and `row.get("x")` keep working, and mypy checks
every key and its type where the row is used. The keys are the tables' columns as the
migrations leave them (storage/schema.py; tests/test_rows.py compares them); a column that
may be NULL is `X | None`. SQLite has no booleans: flags are 0 or 1 (`int`).

`first` and `every` are the one place where what SQLite returned is declared to be of a
shape: storage functions pass their query through them and name the shape they return."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NotRequired, TypedDict, TypeVar, cast

from storage.vocabulary import Kind, Verdict

Row = TypeVar("Row")


def first(shape: type[Row], rows: Iterable[dict[str, Any]]) -> Row | None:
    """The first of `rows` as a `shape` row, or None when there is none. `shape` names the
    TypedDict the query's columns make; nothing is checked at run time (the columns are the
    query's, and tests/test_rows.py holds the table shapes to the schema)."""
    for row in rows:
        return cast(Row, row)
    return None


def must(row: Row | None, what: str) -> Row:
    """`row`, read by an id the caller's own unit of work holds (it wrote the row, or a foreign
    key points at it), so it exists; a missing one is a broken invariant, raised naming it."""
    if row is None:
        raise LookupError(f"{what} is missing from the database")
    return row


def every(shape: type[Row], rows: Iterable[dict[str, Any]]) -> list[Row]:
    """All of `rows` as `shape` rows, in order (see `first`)."""
    return cast(list[Row], list(rows))


def each(shape: type[Row], rows: Iterator[dict[str, Any]]) -> Iterator[Row]:
    """`rows` as `shape` rows, one at a time, for reads too large to hold (see `first`)."""
    return cast(Iterator[Row], rows)


class Participant(TypedDict):
    """A person taking part: a pseudonym, or a Hugging Face account when signed in."""

    id: str
    display_name: str
    hf_username: str | None
    share_identity: int
    consented_at: str
    banned_at: str | None
    ban_reason: str | None
    created_at: str
    hidden_at: str | None
    hf_orgs: str | None  # a JSON list of organisation names, as of the last sign-in


class Conversation(TypedDict):
    """One chat of one person with their group's model in one round."""

    id: int
    participant_id: str
    round_id: int
    group_index: int
    created_at: str


class Message(TypedDict):
    """One turn of a conversation as written (by the person, or by a model version)."""

    id: int
    conversation_id: int
    position: int
    role: str
    content: str
    model_version_id: int | None
    alternative_of: int | None  # the reply (A) this second reply (B) is an alternative of
    created_at: str


class ShownMessage(Message):
    """A message with its conversation's owner, round and group, and the text it shows its
    owner (`shown`: their live rewrite of it, or what was written; storage.queries.SHOWN)."""

    participant_id: str
    round_id: int
    group_index: int
    shown: str


class ChatLine(TypedDict):
    """One turn of a conversation's main line as its owner sees it: `content` is the text shown,
    `written` what was written, and `rating_id`, `rating` the owner's live thumbs on it."""

    id: int
    position: int
    role: str
    content: str
    written: str
    model_version_id: int | None
    rating_id: int | None
    rating: int | None


class NewCorrection(TypedDict):
    """What a correction is stored with (storage.queries.add_correction): the columns a caller
    gives; the id, `split` and the moderation and replacement times are the database's."""

    kind: Kind
    participant_id: str
    round_id: int
    group_index: int
    message_id: int
    prompt: str | list[dict[str, str]]  # a list is stored as JSON
    original: str
    created_at: str
    other_message_id: NotRequired[int | None]
    model_version_id: NotRequired[int | None]
    rewrite: NotRequired[str | None]
    choice: NotRequired[str | None]
    emotion: NotRequired[str | None]
    rating: NotRequired[int | None]
    source: NotRequired[str | None]
    shown: NotRequired[str | None]  # what the person saw; `original` when not given
    other_reply: NotRequired[str | None]


class Correction(TypedDict):
    """A stored correction: one person's rewrite, A/B pick, emotion label or thumbs on a reply.
    Exactly the field of its `kind` is set (`rewrite`, `choice`, `emotion` or `rating`)."""

    id: int
    kind: Kind
    participant_id: str
    round_id: int
    group_index: int
    message_id: int
    other_message_id: int | None
    model_version_id: int | None
    prompt: str  # the chat before the reply, as JSON [{role, content}]
    original: str
    rewrite: str | None
    choice: str | None
    emotion: str | None
    rating: int | None
    split: str
    hidden_at: str | None
    undone_at: str | None
    created_at: str
    replaced_at: str | None
    replaced_by: int | None
    source: str | None
    shown: str | None  # the reply as its author saw it (their rewrite of it, when they had one)
    other_reply: str | None  # reply B of a choice, as its author saw it


class ReviewItem(Correction):
    """A correction as a reviewer is shown it, with how many reviews it has."""

    n_reviews: int


class ExportedCorrection(Correction):
    """A correction as the export reads it (storage.export_snapshot.Snapshot.corrections): with
    its author, its round's number and campaign, its counted reviews and whether it is live."""

    round: int
    campaign_id: int
    display_name: str
    hf_username: str | None
    share_identity: int
    banned_at: str | None
    person_hidden_at: str | None
    endorsements: int
    rejections: int
    live: int


class Review(TypedDict):
    """One person's verdict on another's correction."""

    id: int
    correction_id: int
    participant_id: str
    verdict: Verdict
    round_id: int  # the round that was current when the review was given
    created_at: str
    source: str | None
    deal_id: int | None


class Round(TypedDict):
    """One round of a campaign: open for corrections, then closed, trained, judged, done."""

    id: int
    campaign_id: int
    number: int
    state: str
    champion_id: int
    winner_id: int | None
    improved: int | None
    opened_at: str
    closes_at: str | None
    closed_at: str | None
    closed_by: str | None
    finished_at: str | None
    notes: str  # a JSON list of what the round's job said to the organizer


class Version(TypedDict):
    """A model version: the base, a round's candidate (of a group, the union or the merge)."""

    id: int
    campaign_id: int
    round_id: int | None
    group_index: int | None
    parent_id: int | None
    adapter_path: str | None  # None for the base model
    status: str
    error: str | None
    created_at: str
    kind: str
    sources: str | None  # JSON list of the versions a merged candidate was made from


class RoundRecord(TypedDict):
    """A round's record of its bundle (storage.records.bundle_of), its JSON read."""

    round_id: int
    hash: str  # sha256 of the bundle's manifest (its folder's name)
    path: str  # the bundle folder, relative to the data dir
    verdicts: list[tuple[str, str, str | None]]  # (reviewer, verdict, consensus)
    settings: dict[str, Any]  # what trained and judged the round (crowd.rounds.record)
    created_at: str


class Job(TypedDict):
    """A round job in the queue (pending -> running -> finished | failed | cancelled)."""

    id: int
    kind: str
    round_id: int | None
    status: str
    progress: str  # JSON
    error: str | None
    attempts: int
    created_at: str
    started_at: str | None
    heartbeat_at: str | None
    finished_at: str | None
    runner: str | None
    external_id: str | None
    flavor: str | None
    runner_stage: str | None
    running_s: float | None
    log_tail: str | None
    failures: int


class RecentJob(Job):
    """A job with its round's number and notes, for the organizer's job list."""

    notes: str | None
    round_number: int | None


class Campaign(TypedDict):
    """A campaign's stored settings (crowd.campaigns.CampaignSpec declares each one)."""

    id: int
    name: str
    task: str
    target_emotion: str | None
    n_groups: int
    prompts: str  # a JSON list
    round_policy: str
    round_seconds: int | None
    round_corrections: int | None
    grouping: str
    points_rule: str
    training_mode: str
    min_corrections: int
    heldout_share: float
    win_margin: float
    licence: str
    active: int
    created_at: str
    reviews_on: int
    min_reviews: int
    person_cap: float
    require_login: int
    venues: str
    hf_org: str | None
    hold_unreviewed: int
    union_candidate: int
    union_continues: int
    memory_rounds: int
    memory_groups: int
    merge_method: str
    judge: str


TABLE_SHAPES: dict[str, type] = {
    "participants": Participant,
    "conversations": Conversation,
    "messages": Message,
    "corrections": Correction,
    "reviews": Review,
    "rounds": Round,
    "model_versions": Version,
    "jobs": Job,
    "campaigns": Campaign,
}
"""Each table and the shape of its `SELECT *` row (tests/test_rows.py compares the keys)."""
