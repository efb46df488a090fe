"""Reads behind the model export: every model version of a campaign and its evaluations."""

from __future__ import annotations

from sqlite_utils import Database

from storage.rows import Version, every


def versions_of(db: Database, campaign_id: int) -> list[Version]:
    """Every model version of the campaign (the initial one, candidates, failed ones), by id."""
    return every(
        Version,
        db.query("SELECT * FROM model_versions WHERE campaign_id = ? ORDER BY id", [campaign_id]),
    )


def evaluations_by_round(db: Database, campaign_id: int) -> list[dict]:
    """Every evaluation of the campaign with its round's number: round_id, model_version_id,
    metric, value, loss, n_items."""
    return list(
        db.query(
            """SELECT e.round_id, r.number, e.model_version_id, e.metric, e.value, e.loss, e.n_items
               FROM evaluations e JOIN rounds r ON r.id = e.round_id
               WHERE r.campaign_id = ? ORDER BY r.number, e.model_version_id""",
            [campaign_id],
        )
    )
