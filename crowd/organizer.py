"""Organizer actions: campaign settings, closing rounds, jobs, moderation, export.

Every method takes the organizer key first and checks it; volunteers cannot reach these
actions even by calling the handlers directly.
"""

from __future__ import annotations

import hmac
import json
import random
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from crowd import views
from crowd.assess import assess
from crowd.campaigns import validate_campaign
from crowd.identity import load_secret
from crowd.limits import CALLER, KeyGuard, Refused
from crowd.quality import QualityReport, quality_report
from crowd.quality import load as load_quality
from crowd.references import KINDS, clean_references, row_key
from crowd.review import REVIEWED_KINDS
from crowd.rounds.state import IllegalTransition, close_round
from crowd.service import CrowdService, context_of
from crowd.suspicion import group_of
from storage import deals, queries
from storage import rounds as store
from storage.quality import set_hidden
from storage.rows import Campaign
from storage.vocabulary import VERDICTS

PASS_PREFIX = "hf-pass:"
PASS_MAX_AGE_S = 8 * 3600


class Organizer:
    def __init__(self, service: CrowdService, rng: random.Random | None = None):
        self.service = service
        self.rng = rng or random.Random()
        self._passes = URLSafeTimedSerializer(
            load_secret(service.settings.data_dir, service.settings.identity_secret),
            salt="crowd-organizer-pass",
        )
        self.guard = KeyGuard()

    def authorized(self, key: str | None, hf_orgs: list[str] | None = None) -> bool:
        """The organizer secret, a pass from `issue_pass`, or membership of the configured
        Hugging Face organisation. Wrong secrets back off per caller address (`CALLER`): while
        an address is backed off, every secret from it is refused; other addresses are only
        slowed when wrong keys come from many (`crowd.limits.KeyGuard`)."""
        settings = self.service.settings
        if settings.organizer_hf_org and hf_orgs and settings.organizer_hf_org in hf_orgs:
            return True
        if isinstance(key, str) and key.startswith(PASS_PREFIX):
            return self._valid_pass(key)  # signed: guessing one is hopeless anyway
        secret = settings.organizer_secret
        if not (secret and key):
            return False
        address = CALLER.get()
        if self.guard.wait_s(address) > 0:
            return False
        self.guard.pause()  # many wrong keys from everywhere: slower, never shut
        # As UTF-8 bytes: compare_digest refuses non-ASCII str, and any text is a fine key.
        typed = str(key).encode("utf-8", "surrogatepass")
        ok = hmac.compare_digest(typed, secret.encode("utf-8"))
        self.guard.record(address, ok)
        return ok

    def issue_pass(self, hf_orgs: list[str] | None) -> str:
        """A signed organizer pass (valid 8 hours) for a member of the configured Hugging Face
        organisation, so that every later call can be checked like the secret is."""
        org = self.service.settings.organizer_hf_org
        if not (org and hf_orgs and org in hf_orgs):
            raise Refused("Organizer access only.")
        return PASS_PREFIX + self._passes.dumps(org)

    def _valid_pass(self, key: str) -> bool:
        org = self.service.settings.organizer_hf_org
        try:
            return (
                bool(org)
                and self._passes.loads(key[len(PASS_PREFIX) :], max_age=PASS_MAX_AGE_S) == org
            )
        except BadSignature:  # also an expired pass
            return False

    def check_key(self, key: str | None) -> None:
        """Refused unless `key` is the organizer's (see `authorized`), saying when to retry."""
        if not self.authorized(key):
            wait = self.guard.wait_s(CALLER.get())
            if wait > 0:
                raise Refused(
                    f"Too many wrong organizer keys; try again in {wait:.0f} s.",
                    retry_after_s=wait,
                )
            raise Refused("Organizer access only.")

    # -- campaign ----------------------------------------------------------------------------

    def update_campaign(self, key: str, **changes) -> Campaign:
        """Validate and apply settings to the active campaign; returns the campaign.
        The group count applies from the next round on."""
        self.check_key(key)
        clean = validate_campaign(changes)
        with self.service.action() as db:
            campaign, _ = context_of(db)
            store.update_campaign(db, campaign["id"], **clean)
            updated = store.get_campaign(db, campaign["id"])
            assert updated is not None  # the campaign just updated, in this transaction
            return updated

    def add_references(
        self, key: str, rows: Sequence[object], places: Sequence[str] | None = None
    ) -> int:
        """Load reference rows into the held-out set, all or nothing (formats in
        `crowd.references`). Every row is checked first; a refusal names the first bad one by
        its place ('line 7') or, without places, as 'row N'. Rows already stored are skipped.
        Returns how many rows were added."""
        self.check_key(key)
        places = places or [f"row {i}" for i in range(1, len(rows) + 1)]
        if len(places) != len(rows):
            raise ValueError("one place per row")
        clean = clean_references(zip(places, rows))
        with self.service.action() as db:
            campaign, _ = context_of(db)
            stored = {
                row_key(r)
                for kind in KINDS
                for r in store.reference_texts(db, campaign["id"], kind)
            }
            new = []
            for row in clean:
                if row_key(row) not in stored:
                    stored.add(row_key(row))
                    new.append(row)
            return store.add_reference_texts(db, campaign["id"], new, self.service.now())

    def reference_counts(self, key: str) -> dict[str, dict[str, int]]:
        """How many reference rows the active campaign has: kind -> label ('' when none) -> n."""
        self.check_key(key)
        campaign, _ = self.service.context()
        counts: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        with self.service.db() as db:
            for row in store.reference_counts(db, campaign["id"]):
                counts.setdefault(row["kind"], {})[row["label"] or ""] = row["n"]
        return counts

    # -- rounds and jobs ---------------------------------------------------------------------

    def close_round(self, key: str, expected: int | None = None) -> int:
        """Close the current round now; the worker trains and judges it. Returns the job id.
        `expected`: the round number the organizer confirmed closing; another round is refused
        (a confirmation left open while the round changed closes nothing)."""
        self.check_key(key)
        with self.service.action() as db:
            campaign, round_ = context_of(db)
            if expected is not None and round_["number"] != expected:
                raise Refused(
                    f"Round {expected} is not the open round any more (round {round_['number']} "
                    "is); nothing was closed."
                )
            try:
                return close_round(db, campaign, round_, "organizer", self.service.now(), self.rng)
            except IllegalTransition:
                raise Refused("The round is already closed.") from None

    def round_results(self, key: str) -> list[views.RoundResult]:
        """Every round of the campaign so far: its state, winner, metric per model and points."""
        self.check_key(key)
        campaign, _ = self.service.context()
        return views.round_results(self.service.settings.db_path, campaign)

    def round_status(self, key: str) -> dict:
        """The current round: number, state, closing time, and per group its members and live
        corrections."""
        self.check_key(key)
        campaign, round_ = self.service.context()
        with self.service.db() as db:
            counts = queries.group_correction_counts(db, round_["id"], campaign["n_groups"])
            sizes = queries.group_sizes(db, round_["id"], campaign["n_groups"])
        return {
            "campaign": campaign["name"],
            "round": round_["number"],
            "state": round_["state"],
            "closes_at": round_["closes_at"],
            "policy": campaign["round_policy"],
            "group_corrections": counts,
            "group_members": sizes,
        }

    def jobs(self, key: str, limit: int = 10) -> list[dict]:
        self.check_key(key)
        with self.service.db() as db:
            rows = store.recent_jobs(db, limit)
        return [
            {
                **row,
                "progress": json.loads(row["progress"] or "{}"),
                "notes": json.loads(row.get("notes") or "[]"),
            }
            for row in rows
        ]

    def runner_status(self, key: str) -> dict:
        """Where round jobs run (CROWD_ROUND_RUNNER, and on Hugging Face Jobs the flavor and its
        price), and the latest round job as its runner last saw it: its stage, billed minutes,
        cost so far, error and the tail of its log."""
        self.check_key(key)
        from crowd.rounds.hf_jobs import PRICES_USD_PER_HOUR, cost_usd
        from storage import records

        settings = self.service.settings
        hf = settings.round_runner == "hf-jobs"
        with self.service.db() as db:
            job = records.latest_round_job(db)
        if job is not None:
            job = {**job, "cost_usd": cost_usd(job["flavor"], job["running_s"])}
        return {
            "runner": settings.round_runner,
            "flavor": settings.job_flavor if hf else None,
            "price_per_hour": PRICES_USD_PER_HOUR.get(settings.job_flavor) if hf else None,
            "job": job,
        }

    def cancel_job(self, key: str, job_id: int) -> bool:
        self.check_key(key)
        with self.service.action() as db:
            return store.cancel_job(db, int(job_id), self.service.now())

    def retry_job(self, key: str, job_id: int) -> int:
        """Queue a cancelled or failed round again; it resumes where it stopped."""
        self.check_key(key)
        with self.service.action() as db:
            job = store.get_job(db, int(job_id))
            if job is None or job["status"] not in ("cancelled", "failed"):
                raise Refused("Only a cancelled or failed job can be retried.")
            if job["round_id"] is None:
                raise Refused("That job belongs to no round; there is nothing to retry.")
            return store.add_job(db, job["kind"], job["round_id"], self.service.now())

    # -- moderation --------------------------------------------------------------------------

    def recent_corrections(self, key: str, limit: int = 50) -> list[dict]:
        self.check_key(key)
        with self.service.db() as db:
            return queries.recent_corrections(db, limit)

    def hide(self, key: str, correction_id: int) -> bool:
        """Hide a correction: it leaves training, evaluation, points and export."""
        self.check_key(key)
        with self.service.action() as db:
            if queries.get_correction(db, int(correction_id)) is None:
                raise Refused(f"There is no correction {correction_id}.")
            return queries.hide_correction(db, int(correction_id), self.service.now())

    def ban(self, key: str, participant_id: str, reason: str = "") -> bool:
        """Ban a participant: their data leaves training and export; they cannot act."""
        self.check_key(key)
        with self.service.action() as db:
            if queries.get_participant(db, str(participant_id)) is None:
                raise Refused(f"There is no participant {str(participant_id)[:40]}.")
            return queries.ban_participant(
                db, str(participant_id), reason[:200], self.service.now()
            )

    # -- data quality ------------------------------------------------------------------------

    def quality(self, key: str) -> QualityReport:
        """The active campaign's Data quality view: agreement, review coverage, and everyone
        who acted, most suspicious first (see `crowd.quality`)."""
        self.check_key(key)
        campaign, _ = self.service.context()
        with self.service.db() as db:
            data = load_quality(db, campaign["id"])
        return quality_report(data)

    def hide_person(self, key: str, participant_id: str, hidden: bool = True) -> bool:
        """Hide all of a person's data (it leaves training, evaluation, points and export;
        they can still act), or with `hidden=False` show it again. False when nothing changed."""
        self.check_key(key)
        with self.service.db() as db:
            if queries.get_participant(db, str(participant_id)) is None:
                raise Refused(f"There is no participant {str(participant_id)[:40]}.")
            now = self.service.now() if hidden else None
            return set_hidden(db, str(participant_id), now)

    def unhide_person(self, key: str, participant_id: str) -> bool:
        """Show a hidden person's data again."""
        return self.hide_person(key, participant_id, hidden=False)

    def hide_group(self, key: str, participant_id: str, reason: str = "") -> int:
        """Hide, in one action, everyone who shares the person's source group and, when it is
        in a collusion cluster, the whole cluster (`crowd.suspicion.group_of`). Returns how
        many were hidden now."""
        return self._group_action(key, participant_id, lambda db, p, now: set_hidden(db, p, now))

    def ban_group(self, key: str, participant_id: str, reason: str = "") -> int:
        """Ban, in one action, the person's source group and collusion cluster."""
        why = (reason or "data quality")[:200]
        return self._group_action(
            key, participant_id, lambda db, p, now: queries.ban_participant(db, p, why, now)
        )

    def _group_action(self, key: str, participant_id: str, act) -> int:
        self.check_key(key)
        with self.service.action() as db:
            if queries.get_participant(db, str(participant_id)) is None:
                raise Refused(f"There is no participant {str(participant_id)[:40]}.")
            campaign, _ = context_of(db)
            people = group_of(assess(db, campaign), str(participant_id))
            now = self.service.now()
            return sum(bool(act(db, person, now)) for person in people)

    def confirm(self, key: str, correction_id: int, verdict: str) -> int:
        """The organizer's own verdict on a correction ('endorse' or 'reject'): it decides the
        correction's status, and the correction becomes a gold item, dealt unmarked to weigh
        reviewers (`crowd.trust`). Returns the gold item's id."""
        self.check_key(key)
        if verdict not in VERDICTS:
            raise Refused("A verdict is 'endorse' or 'reject'.")
        with self.service.action() as db:
            try:
                correction = queries.get_correction(db, int(correction_id))
            except (TypeError, ValueError):
                correction = None
            if correction is None or correction["kind"] not in REVIEWED_KINDS:
                raise Refused(f"There is no reviewable correction {correction_id}.")
            campaign, _ = context_of(db)
            return deals.add_gold(
                db, campaign["id"], verdict, self.service.now(), correction_id=correction["id"]
            )

    @contextmanager
    def export_zip(self, key: str | None) -> Iterator[Path]:
        """The export zip, in a private temporary folder that is removed when the block ends
        (once the download is handed over). Checks the key before creating anything."""
        self.check_key(key)
        from crowd.export import export_zip

        with tempfile.TemporaryDirectory(prefix="crowd-export-") as tmp:
            yield export_zip(self.service.settings.db_path, Path(tmp) / "crowd-export.zip")

    def export_model_zip(
        self, key: str, out_dir: Path, round_number: int | None = None, merged: bool = False
    ) -> Path:
        """The champion after a finished round (default: the last) as one zip: what
        `python -m crowd export-model` writes. ModelExportError (a ValueError) says why not."""
        self.check_key(key)
        from crowd.model_export.folder import export_model_zip

        out_dir.mkdir(parents=True, exist_ok=True)
        name = "crowd-model-merged.zip" if merged else "crowd-model.zip"
        return export_model_zip(
            self.service.settings, out_dir / name, round_number=round_number, merged=merged
        )
