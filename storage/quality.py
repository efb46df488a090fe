"""Reads behind the organizers' Data quality view and a volunteer's review record, and the
hide / unhide of a person. Every function takes an open `Database` (one unit of work).

A *kept* correction is one its author did not undo or replace and no moderator hid, by a person
who is not banned. Unlike `storage.queries.LIVE`, kept rows include those of *hidden* people
(flagged `person_hidden`): the quality view still scores a hidden person, so that an organizer
can see why and undo it, while agreement and coverage leave their rows out."""

from __future__ import annotations

from sqlite_utils import Database

KEPT = (
    "c.undone_at IS NULL AND c.hidden_at IS NULL AND c.replaced_at IS NULL AND p.banned_at IS NULL"
)
_IN_CAMPAIGN = "c.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?)"


def people(db: Database, campaign_id: int) -> list[dict]:
    """Everyone not banned who wrote a correction or a review in the campaign:
    id, display_name, hidden_at."""
    return list(
        db.query(
            f"""SELECT p.id, p.display_name, p.hidden_at FROM participants p
                WHERE p.banned_at IS NULL AND p.id IN (
                    SELECT c.participant_id FROM corrections c WHERE {_IN_CAMPAIGN}
                    UNION SELECT v.participant_id FROM reviews v
                    WHERE v.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?))
                ORDER BY p.id""",
            [campaign_id, campaign_id],
        )
    )


def labels(db: Database, campaign_id: int) -> list[tuple[str, int, str, str, str, bool]]:
    """Every kept label of the campaign as (family, round id, item, person, value,
    person_hidden). Families: 'emotion' (item: the reply), 'choice' (item: the reply pair A-B),
    'review' (item: the reviewed correction, which must be live; round: the correction's)."""
    rows = db.execute(
        f"""SELECT 'emotion', c.round_id, CAST(c.message_id AS TEXT), c.participant_id, c.emotion,
                   p.hidden_at IS NOT NULL
            FROM corrections c JOIN participants p ON p.id = c.participant_id
            WHERE {_IN_CAMPAIGN} AND c.kind = 'emotion' AND {KEPT}
            UNION ALL
            SELECT 'choice', c.round_id, c.message_id || '-' || c.other_message_id,
                   c.participant_id, c.choice, p.hidden_at IS NOT NULL
            FROM corrections c JOIN participants p ON p.id = c.participant_id
            WHERE {_IN_CAMPAIGN} AND c.kind = 'choice' AND {KEPT}
            UNION ALL
            SELECT 'review', c.round_id, CAST(c.id AS TEXT), v.participant_id, v.verdict,
                   q.hidden_at IS NOT NULL
            FROM reviews v JOIN corrections c ON c.id = v.correction_id
            JOIN participants p ON p.id = c.participant_id
            JOIN participants q ON q.id = v.participant_id
            WHERE {_IN_CAMPAIGN} AND {KEPT} AND p.hidden_at IS NULL AND q.banned_at IS NULL""",
        [campaign_id] * 3,
    ).fetchall()
    return [(f, r, item, who, value, bool(hidden)) for f, r, item, who, value, hidden in rows]


def kept_corrections(db: Database, campaign_id: int) -> list[dict]:
    """Kept corrections of the campaign: id, participant_id, round_id, kind, person_hidden."""
    return list(
        db.query(
            f"""SELECT c.id, c.participant_id, c.round_id, c.kind,
                       p.hidden_at IS NOT NULL AS person_hidden
                FROM corrections c JOIN participants p ON p.id = c.participant_id
                WHERE {_IN_CAMPAIGN} AND {KEPT} ORDER BY c.id""",
            [campaign_id],
        )
    )


def action_times(db: Database, campaign_id: int) -> list[tuple[str, str]]:
    """(person, created_at) of every correction (undone and replaced ones too: a flood is
    behaviour) and every review in the campaign by people not banned, in time order per person."""
    return db.execute(
        f"""SELECT c.participant_id, c.created_at FROM corrections c
                JOIN participants p ON p.id = c.participant_id
                WHERE {_IN_CAMPAIGN} AND p.banned_at IS NULL
            UNION ALL
            SELECT v.participant_id, v.created_at FROM reviews v
                JOIN participants p ON p.id = v.participant_id
                WHERE v.round_id IN (SELECT id FROM rounds WHERE campaign_id = ?)
                  AND p.banned_at IS NULL
            ORDER BY 1, 2""",
        [campaign_id, campaign_id],
    ).fetchall()


def rewrite_texts(db: Database, campaign_id: int, per_person: int) -> list[tuple[str, str]]:
    """(person, text) of each person's latest `per_person` rewrites in the campaign (replaced
    and undone ones too), people not banned."""
    return db.execute(
        f"""SELECT participant_id, rewrite FROM (
                SELECT c.participant_id, c.rewrite,
                       row_number() OVER (PARTITION BY c.participant_id ORDER BY c.id DESC) AS k
                FROM corrections c JOIN participants p ON p.id = c.participant_id
                WHERE {_IN_CAMPAIGN} AND c.kind = 'rewrite' AND c.rewrite IS NOT NULL
                  AND p.banned_at IS NULL)
            WHERE k <= ? ORDER BY participant_id""",
        [campaign_id, per_person],
    ).fetchall()


def my_corrections(db: Database, participant_id: str, campaign_id: int) -> list[dict]:
    """A person's kept corrections in the campaign (id, kind, round_id)."""
    return list(
        db.query(
            f"""SELECT c.id, c.kind, c.round_id FROM corrections c
                JOIN participants p ON p.id = c.participant_id
                WHERE {_IN_CAMPAIGN} AND c.participant_id = ? AND {KEPT} ORDER BY c.id""",
            [campaign_id, participant_id],
        )
    )


def my_reviews(db: Database, participant_id: str, campaign_id: int) -> list[tuple[int, str]]:
    """(correction id, verdict) of a person's reviews of kept corrections in the campaign."""
    return db.execute(
        f"""SELECT v.correction_id, v.verdict FROM reviews v
            JOIN corrections c ON c.id = v.correction_id
            JOIN participants p ON p.id = c.participant_id
            WHERE {_IN_CAMPAIGN} AND v.participant_id = ? AND {KEPT} ORDER BY v.id""",
        [campaign_id, participant_id],
    ).fetchall()


def review_stamp(db: Database, participant_id: str) -> tuple[int, int]:
    """(reviews of my corrections, reviews I gave): cheap, and it changes whenever my review
    record may, so an open page knows when to redraw it."""
    row = db.execute(
        """SELECT (SELECT count(*) FROM reviews v JOIN corrections c ON c.id = v.correction_id
                   WHERE c.participant_id = ?),
                  (SELECT count(*) FROM reviews WHERE participant_id = ?)""",
        [participant_id, participant_id],
    ).fetchone()
    return int(row[0]), int(row[1])


def set_hidden(db: Database, participant_id: str, now: str | None) -> bool:
    """Hide (`now` given) or show again (`now` None) all of a person's data; False when the
    person is unknown or already in that state."""
    state = "hidden_at IS NULL" if now is not None else "hidden_at IS NOT NULL"
    cursor = db.execute(
        f"UPDATE participants SET hidden_at = ? WHERE id = ? AND {state}", [now, participant_id]
    )
    return cursor.rowcount == 1
