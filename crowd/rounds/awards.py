"""The ledger rows a finished round writes: the campaign's points rule over the corrections that
were used (the reason says how many of the person's corrections counted and how many did not:
rejected in review or over the per-person cap), and, with reviews on, points for reviews given
in the round that count (independent of the author, `crowd.assess`) and agree with the crowd's
verdict.

When the union candidate wins, the rule runs with the whole crowd as one group ranked first
(the Shapley rule's Owen value is then each contributor's Shapley value among all of them; the
paper rule gives everyone the first group's points); a merged winner, with the merged groups'
contributors as one group. The ledger keeps each person's own group, and the reason says
which candidate won."""

from __future__ import annotations

from dataclasses import replace

from sqlite_utils import Database

from crowd.assess import assess
from crowd.points import Award, RoundOutcome, get_rule, review_awards
from crowd.trust import consensus
from storage import reviews
from storage.rows import Campaign, Round


def ledger_rows(
    campaign: Campaign,
    round_: Round,
    outcome: RoundOutcome,
    usage: dict,
    verdicts: list[tuple[str, str, str | None]],
    winner: str = "group",
    merged: set[int] | None = None,
) -> list[dict]:
    """Points rows for `round_`; `usage` maps a person to (used, not used) corrections and
    `verdicts` are the round's reviews with the consensus as recorded (`verdicts_of`);
    `winner` is the crowned candidate's kind, `merged` the groups a merged winner merged."""
    rule = get_rule(campaign["points_rule"])
    home = {item.participant_id: item.group_index for item in outcome.items}
    scored = outcome if winner == "group" else as_one_group(outcome, merged)
    rows = []
    for award in rule.award(scored):
        used, unused = usage.get(award.participant_id, (0, 0))
        reason = {**award.reason, "corrections_used": used, "corrections_not_used": unused}
        if winner != "group":
            reason["candidate"] = winner
            reason.pop("group_score", None)  # the one group's score is not a group's
            award = replace(award, group_index=home.get(award.participant_id))
        rows.append(_row(round_, award, rule.name, reason))
    if campaign["reviews_on"]:
        rows += [_row(round_, a, "review", a.reason) for a in review_awards(verdicts)]
    return [row for row in rows if row["amount"]]


def verdicts_of(
    db: Database, campaign: Campaign, round_: Round
) -> list[tuple[str, str, str | None]]:
    """(reviewer, verdict, the crowd's consensus now) for each review given during `round_`
    that counts (a review of one's own voice, venue or cluster earns nothing): read when the
    round's bundle is written and kept in its record."""
    trust = assess(db, campaign)
    return [
        (r["participant_id"], r["verdict"], consensus(trust.status(r["correction_id"])))
        for r in reviews.reviews_given_in(db, round_["id"])
        if r["correction_id"] in trust.authors
        and trust.independent(r["participant_id"], trust.authors[r["correction_id"]])
    ]


def _row(round_: Round, award: Award, rule: str, reason: dict) -> dict:
    return {
        "round_id": round_["id"],
        "participant_id": award.participant_id,
        "group_index": award.group_index,
        "amount": float(award.amount),
        "rule": rule,
        "reason": reason,
    }


def as_one_group(outcome: RoundOutcome, groups: set[int] | None = None) -> RoundOutcome:
    """`outcome` with the contributors of `groups` (None: every group) as one group 0, ranked
    first; the others' items leave it (their group's candidate did not win)."""
    items = [
        replace(item, group_index=0)
        for item in outcome.items
        if groups is None or item.group_index in groups
    ]
    people = list(dict.fromkeys(item.participant_id for item in items))
    return replace(outcome, items=items, members={0: people}, group_scores={0: 0.0})
