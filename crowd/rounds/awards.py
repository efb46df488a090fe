"""The ledger rows a finished round writes: the campaign's points rule over the corrections that
were used (the reason says how many of the person's corrections counted and how many did not:
rejected in review or over the per-person cap), and, with reviews on, points for reviews given
in the round that agree with the crowd's verdict."""

from __future__ import annotations

from sqlite_utils import Database

from crowd.points import Award, RoundOutcome, get_rule, review_awards
from crowd.trust import NO_REVIEWS, consensus, rule_of
from storage import reviews


def ledger_rows(
    campaign: dict,
    round_: dict,
    outcome: RoundOutcome,
    usage: dict,
    verdicts: list[tuple[str, str, str | None]],
) -> list[dict]:
    """Points rows for `round_`; `usage` maps a person to (used, not used) corrections and
    `verdicts` are the round's reviews with the consensus as recorded (`verdicts_of`)."""
    rule = get_rule(campaign["points_rule"])
    rows = []
    for award in rule.award(outcome):
        used, unused = usage.get(award.participant_id, (0, 0))
        reason = {**award.reason, "corrections_used": used, "corrections_not_used": unused}
        rows.append(_row(round_, award, rule.name, reason))
    if campaign["reviews_on"]:
        rows += [_row(round_, a, "review", a.reason) for a in review_awards(verdicts)]
    return [row for row in rows if row["amount"]]


def verdicts_of(db: Database, campaign: dict, round_: dict) -> list[tuple[str, str, str | None]]:
    """(reviewer, verdict, the crowd's consensus now) for each review given during `round_`:
    read when the round's bundle is written and kept in its record."""
    given = reviews.reviews_given_in(db, round_["id"])
    counts = reviews.review_counts(db, sorted({r["correction_id"] for r in given}))
    rule = rule_of(campaign)
    return [
        (
            r["participant_id"],
            r["verdict"],
            consensus(rule.status(*counts.get(r["correction_id"], NO_REVIEWS))),
        )
        for r in given
    ]


def _row(round_: dict, award: Award, rule: str, reason: dict) -> dict:
    return {
        "round_id": round_["id"],
        "participant_id": award.participant_id,
        "group_index": award.group_index,
        "amount": float(award.amount),
        "rule": rule,
        "reason": reason,
    }
