"""Reads and writes for the volunteer-facing side: participants, groups, conversations,
corrections. Every function takes an open `Database` (one unit of work) and returns rows of
the shapes in storage/rows.py, or values; times are ISO-8601 UTC strings passed in by the
caller."""

from __future__ import annotations

import json
from typing import Unpack

from sqlite_utils import Database

from storage.db import insert
from storage.rows import (
    ChatLine,
    Conversation,
    Correction,
    Message,
    NewCorrection,
    Participant,
    RecentCorrection,
    ShownMessage,
    every,
    first,
)


def get_participant(db: Database, participant_id: str) -> Participant | None:
    return first(Participant, db.table("participants").rows_where("id = ?", [participant_id]))


def participant_by_hf(db: Database, hf_username: str) -> Participant | None:
    return first(Participant, db.table("participants").rows_where("hf_username = ?", [hf_username]))


def add_participant(
    db: Database, participant_id: str, display_name: str, now: str, hf_username: str | None = None
) -> None:
    db.table("participants").insert(
        {
            "id": participant_id,
            "display_name": display_name,
            "hf_username": hf_username,
            "consented_at": now,
            "created_at": now,
        }
    )


def participant_ids(db: Database) -> list[str]:
    """Every participant's id, in order of arrival."""
    return [row[0] for row in db.execute("SELECT id FROM participants ORDER BY created_at, rowid")]


def ban_participant(db: Database, participant_id: str, reason: str, now: str) -> bool:
    cursor = db.execute(
        "UPDATE participants SET banned_at = ?, ban_reason = ? WHERE id = ? AND banned_at IS NULL",
        [now, reason, participant_id],
    )
    return cursor.rowcount == 1


def membership(db: Database, round_id: int, participant_id: str) -> int | None:
    row = db.execute(
        "SELECT group_index FROM memberships WHERE round_id = ? AND participant_id = ?",
        [round_id, participant_id],
    ).fetchone()
    return None if row is None else row[0]


def group_sizes(db: Database, round_id: int, n_groups: int) -> list[int]:
    sizes = [0] * n_groups
    for group, count in db.execute(
        "SELECT group_index, count(*) FROM memberships WHERE round_id = ? GROUP BY group_index",
        [round_id],
    ):
        if group < n_groups:
            sizes[group] = count
    return sizes


def add_membership(db: Database, round_id: int, participant_id: str, group: int, now: str) -> None:
    db.table("memberships").insert(
        {
            "round_id": round_id,
            "participant_id": participant_id,
            "group_index": group,
            "assigned_at": now,
        },
        ignore=True,
    )


def members(db: Database, round_id: int) -> dict[str, int]:
    rows = db.execute(
        "SELECT participant_id, group_index FROM memberships WHERE round_id = ?", [round_id]
    )
    return dict(rows.fetchall())


def add_conversation(db: Database, participant_id: str, round_id: int, group: int, now: str) -> int:
    return insert(
        db,
        "conversations",
        {
            "participant_id": participant_id,
            "round_id": round_id,
            "group_index": group,
            "created_at": now,
        },
    )


def get_conversation(db: Database, conversation_id: int) -> Conversation | None:
    return first(Conversation, db.table("conversations").rows_where("id = ?", [conversation_id]))


SHOWN = """coalesce((SELECT r.rewrite FROM corrections r
    WHERE r.message_id = m.id AND r.kind = 'rewrite' AND r.undone_at IS NULL
      AND r.replaced_at IS NULL AND r.participant_id = c.participant_id
    ORDER BY r.id DESC LIMIT 1), m.content)"""
"""SQL over `messages m JOIN conversations c`: the text the message shows its conversation's owner.
A reply they rewrote shows their live rewrite (not undone, not replaced by a newer one), which
stands for the reply from then on (crowd/lessons.py); anything else shows what was written."""


def conversation_messages(db: Database, conversation_id: int) -> list[ChatLine]:
    """The main line of a conversation (second replies left out), in order, as its owner sees
    it: `content` is the text shown (SHOWN), `written` what the model or person wrote, and
    `rating_id`, `rating` the owner's live thumbs on the text shown now (a rating given before
    a rewrite stays about the text it was given on, so it is not the rewrite's)."""
    rating = f"""(SELECT r.{{}} FROM corrections r WHERE r.message_id = m.id
                   AND r.kind = 'rating' AND r.participant_id = c.participant_id
                   AND r.undone_at IS NULL AND r.replaced_at IS NULL AND r.shown = {SHOWN}
                 ORDER BY r.id DESC LIMIT 1)"""
    return every(
        ChatLine,
        db.query(
            f"""SELECT m.id, m.position, m.role, {SHOWN} AS content, m.content AS written,
                   m.model_version_id, {rating.format("id")} AS rating_id,
                   {rating.format("rating")} AS rating
                FROM messages m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.conversation_id = ? AND m.alternative_of IS NULL ORDER BY m.position""",
            [conversation_id],
        ),
    )


def add_message(
    db: Database,
    conversation_id: int,
    role: str,
    content: str,
    now: str,
    model_version_id: int | None = None,
    alternative_of: int | None = None,
) -> int:
    position = db.execute(
        "SELECT coalesce(max(position), -1) + 1 FROM messages WHERE conversation_id = ?",
        [conversation_id],
    ).fetchone()[0]
    return insert(
        db,
        "messages",
        {
            "conversation_id": conversation_id,
            "position": position,
            "role": role,
            "content": content,
            "model_version_id": model_version_id,
            "alternative_of": alternative_of,
            "created_at": now,
        },
    )


def get_message(db: Database, message_id: int) -> ShownMessage | None:
    """A message with its conversation's owner, round and group, and the text it shows its
    owner (`shown`, see SHOWN)."""
    rows = db.query(
        f"""SELECT m.*, c.participant_id AS participant_id, c.round_id AS round_id,
                  c.group_index AS group_index, {SHOWN} AS shown
           FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?""",
        [message_id],
    )
    return first(ShownMessage, rows)


def latest_alternative(db: Database, message_id: int) -> int | None:
    """The newest second reply to `message_id` (the one a page shows beside it), or None."""
    row = db.execute(
        "SELECT max(id) FROM messages WHERE alternative_of = ?", [message_id]
    ).fetchone()
    return row[0]


def prompt_before(db: Database, message: Message) -> list[dict[str, str]]:
    """The chat (role, content) up to, not including, `message`, as its owner sees it (SHOWN).
    A second reply (B) answers the same turn as the reply it is an alternative of (A), so its
    prompt stops before A."""
    position = message["position"]
    if message.get("alternative_of") is not None:
        position = db.execute(
            "SELECT position FROM messages WHERE id = ?", [message["alternative_of"]]
        ).fetchone()[0]
    rows = db.execute(
        f"""SELECT m.role, {SHOWN} FROM messages m JOIN conversations c ON c.id = m.conversation_id
            WHERE m.conversation_id = ? AND m.position < ? AND m.alternative_of IS NULL
            ORDER BY m.position""",
        [message["conversation_id"], position],
    ).fetchall()
    return [{"role": role, "content": content} for role, content in rows]


def add_correction(db: Database, **fields: Unpack[NewCorrection]) -> int | None:
    """Insert a correction, but only while its round is open (checked by the INSERT itself, so
    a round closed a moment earlier refuses it); returns its id, or None when refused."""
    if isinstance(fields.get("prompt"), list):
        fields["prompt"] = json.dumps(fields["prompt"], ensure_ascii=False)
    fields.setdefault("shown", fields.get("original"))  # nothing else was shown, then
    names = list(fields)
    cursor = db.execute(
        f"""INSERT INTO corrections ({", ".join(names)})
            SELECT {", ".join("?" * len(names))}
            WHERE (SELECT state FROM rounds WHERE id = ?) = 'open'""",
        [*fields.values(), fields["round_id"]],
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


def replace_earlier(db: Database, correction: Correction, now: str) -> int:
    """Mark the person's earlier live correction of the same kind of the same reply as replaced
    by `correction` (kept, never deleted); returns how many were replaced (0 or 1)."""
    cursor = db.execute(
        """UPDATE corrections SET replaced_at = ?, replaced_by = ?
           WHERE message_id = ? AND participant_id = ? AND kind = ? AND id != ?
             AND replaced_at IS NULL AND undone_at IS NULL""",
        [
            now,
            correction["id"],
            correction["message_id"],
            correction["participant_id"],
            correction["kind"],
            correction["id"],
        ],
    )
    return cursor.rowcount


def get_correction(db: Database, correction_id: int) -> Correction | None:
    return first(Correction, db.table("corrections").rows_where("id = ?", [correction_id]))


def mark_undone(db: Database, correction_id: int, now: str) -> bool:
    cursor = db.execute(
        "UPDATE corrections SET undone_at = ? WHERE id = ? AND undone_at IS NULL",
        [now, correction_id],
    )
    return cursor.rowcount == 1


def hide_correction(db: Database, correction_id: int, now: str) -> bool:
    cursor = db.execute(
        "UPDATE corrections SET hidden_at = ? WHERE id = ? AND hidden_at IS NULL",
        [now, correction_id],
    )
    return cursor.rowcount == 1


def group_correction_counts(db: Database, round_id: int, n_groups: int) -> list[int]:
    """Live corrections per group this round (undone, hidden and banned left out)."""
    counts = [0] * n_groups
    for group, count in db.execute(
        f"""SELECT group_index, count(*) FROM corrections c WHERE round_id = ? AND {LIVE}
            GROUP BY group_index""",
        [round_id],
    ):
        if group < n_groups:
            counts[group] = count
    return counts


def group_person_counts(db: Database, round_id: int) -> list[tuple[int, str, int]]:
    """(group, participant, live corrections) for each contributor of a round."""
    return [
        (group, person, n)
        for group, person, n in db.execute(
            f"""SELECT group_index, participant_id, count(*) FROM corrections c
                WHERE round_id = ? AND {LIVE} GROUP BY group_index, participant_id""",
            [round_id],
        )
    ]


def recent_corrections(db: Database, limit: int = 50) -> list[RecentCorrection]:
    return every(
        RecentCorrection,
        db.query(
            """SELECT c.id, c.kind, c.participant_id, p.display_name, c.round_id, c.group_index,
                   coalesce(c.rewrite, c.choice, c.emotion, c.rating) AS value, c.original,
                   c.shown,
                   c.hidden_at, c.undone_at, c.created_at
            FROM corrections c JOIN participants p ON p.id = c.participant_id
            ORDER BY c.id DESC LIMIT ?""",
            [limit],
        ),
    )


IN_STANDING = "SELECT id FROM participants WHERE banned_at IS NULL AND hidden_at IS NULL"
"""SQL: the ids of the people in good standing, neither banned nor hidden by a moderator. Only
their corrections count (LIVE) and only their reviews are counted (storage.reviews.COUNTED)."""

LIVE = (
    "c.undone_at IS NULL AND c.hidden_at IS NULL AND c.replaced_at IS NULL"
    f" AND c.participant_id IN ({IN_STANDING})"
)
"""SQL condition on `corrections c`: a *live* correction, the one rule of what counts for
training, evaluation, review, points and the export. Leaves out what its author undid or
replaced, what a moderator hid, and everything of a banned or hidden person."""


def is_live(db: Database, correction_id: int) -> bool:
    """Whether the correction is live (LIVE)."""
    found = db.execute(f"SELECT 1 FROM corrections c WHERE c.id = ? AND {LIVE}", [correction_id])
    return found.fetchone() is not None


def set_hf_orgs(db: Database, participant_id: str, orgs: list[str]) -> None:
    """The Hugging Face organisations a signed-in person belongs to, as of their last join."""
    db.execute(
        "UPDATE participants SET hf_orgs = ? WHERE id = ?",
        [json.dumps(sorted(orgs)), participant_id],
    )


def corrections_of(db: Database, participant_ids: set[str] | list[str]) -> list[int]:
    """Ids of every correction these participants made, oldest first."""
    people = list(participant_ids)
    marks = ",".join("?" * len(people))
    return [
        row[0]
        for row in db.execute(
            f"SELECT id FROM corrections WHERE participant_id IN ({marks}) ORDER BY id", people
        )
    ]


def actions_by_participant(db: Database) -> dict[str, int]:
    """participant -> corrections and reviews they stored (withdrawn and replaced ones too)."""
    return dict(
        db.execute(
            """SELECT participant_id, count(*) FROM (
                   SELECT participant_id FROM corrections
                   UNION ALL SELECT participant_id FROM reviews)
               GROUP BY participant_id"""
        ).fetchall()
    )
