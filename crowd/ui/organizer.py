"""Organizer handlers: thin adapters from the organizer page to `crowd.organizer.Organizer`.

Every handler passes the key from the page's password box to the Organizer, which checks it on
every call; the page being visible proves nothing. On a Space with Hugging Face login, a member
of the configured organisation gets a signed pass in that box instead of typing the secret.
"""

from __future__ import annotations

import functools
import html
import inspect
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from crowd.limits import CALLER, Refused, as_id
from crowd.organizer import Organizer
from crowd.references import read_reference_path
from crowd.ui.campaign_form import FORM_FIELDS, form_changes, form_values
from crowd.ui.components import ack, address_of, hub_orgs, warn
from crowd.ui.organizer_tables import (
    CORRECTION_COLUMNS,
    corrections_frame,
    jobs_frame,
    notes_text,
    references_text,
    results_frame,
    runner_text,
    status_text,
)

SHOWN, HIDDEN = gr.update(visible=True), gr.update(visible=False)  # a confirmation row


def parse_id(value: object, what: str) -> int:
    """The id typed in a box (text; a number from a table click or an API call), or Refused
    when it is empty or not an id (`crowd.limits.as_id`)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Refused(f"Type the {what} id first.")
    return as_id(value, what)


WIRED = "__crowd_wired__"  # set on every wrapped handler; tests/test_organizer_page.py checks it


def from_address(handler: Callable, trusted: tuple = ()) -> Callable:
    """`handler` as the page wires it: Gradio hands the caller's request to a first parameter
    annotated `gr.Request`; the wrapper runs `handler` with the caller's address (behind the
    `trusted` proxies) in `CALLER`, so the Organizer backs off wrong keys per address. A
    generator (a download) gets the address around each step, which may run on another
    thread."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def wrapper(request: gr.Request, *args, **kwargs):
            address = address_of(request, trusted)
            steps = handler(*args, **kwargs)
            while True:
                token = CALLER.set(address)
                try:
                    value = next(steps)
                except StopIteration:
                    return
                finally:
                    CALLER.reset(token)
                yield value

    else:

        @functools.wraps(handler)
        def wrapper(request: gr.Request, *args, **kwargs):
            token = CALLER.set(address_of(request, trusted))
            try:
                return handler(*args, **kwargs)
            finally:
                CALLER.reset(token)

    first = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [first, *inspect.signature(handler).parameters.values()]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # inspect reads it
    wrapper.__annotations__ = {**handler.__annotations__, "request": "gr.Request"}
    setattr(wrapper, WIRED, True)
    del wrapper.__wrapped__  # Gradio and typing must see the wrapper's own signature
    return wrapper


class OrganizerHandlers:
    def __init__(
        self,
        organizer: Organizer,
        orgs_of: Callable[[dict | None, str | None], list[str]] = hub_orgs,
    ):
        self.organizer = organizer
        self.orgs_of = orgs_of
        self.proxies = organizer.service.settings.trusted_proxies  # whose X-Forwarded-For counts

    def wired(self, handler: Callable) -> Callable:
        """`handler` with the caller's address known to the Organizer (`from_address`)."""
        return from_address(handler, self.proxies)

    def unlock(
        self,
        key: str | None,
        profile: gr.OAuthProfile | None = None,
        token: gr.OAuthToken | None = None,
    ) -> tuple:
        """Check the key (or, logged in on a Space, the organisation). Returns
        (key, panel, status, *campaign form values)."""
        locked = (
            gr.skip(),
            gr.update(visible=False),
            "Organizer access only.",
            *[gr.skip()] * len(FORM_FIELDS),
        )
        if not key and (profile is not None or token is not None):
            try:
                orgs = self.orgs_of(profile, token.token if token else None)
                key = self.organizer.issue_pass(orgs)
            except Refused:
                key = None
        if not self.organizer.authorized(key):
            warn(Refused("That is not the organizer key."))
            return locked
        campaign, _ = self.organizer.service.context()
        return (key, gr.update(visible=True), self.status(key), *form_values(campaign))

    def status(self, key: str | None) -> str:
        try:
            return status_text(self.organizer.round_status(key))
        except Refused as exc:
            return str(exc)

    def save_settings(self, key: str | None, *values) -> str:
        try:
            campaign = self.organizer.update_campaign(key, **form_changes(values))
        except Refused as exc:
            warn(exc)
            return gr.skip()
        ack("Campaign settings saved.")
        return (
            f"Settings saved for **{campaign['name']}**. A new group count applies from the "
            "next round."
        )

    def references(self, key: str | None) -> str:
        """The reference data summary; quiet while the page is locked."""
        if not self.organizer.authorized(key):
            return gr.skip()
        campaign, _ = self.organizer.service.context()
        return references_text(self.organizer.reference_counts(key), campaign)

    def load_references(self, key: str | None, path: str | None) -> tuple:
        """Load an uploaded JSONL or JSON file of reference rows, all or nothing.
        Returns (reference summary, file box: emptied once loaded)."""
        try:
            if not self.organizer.authorized(key):
                raise Refused("Organizer access only.")
            if not path:
                raise Refused("Choose a file of reference rows first.")
            rows = read_reference_path(path)
            added = self.organizer.add_references(
                key, [row for _, row in rows], [place for place, _ in rows]
            )
        except Refused as exc:
            warn(Refused(f"Nothing was loaded. {exc}"))
            return gr.skip(), gr.skip()
        repeats = len(rows) - added
        ack(
            f"{added} reference rows loaded"
            + (f"; {repeats} were already there." if repeats else ".")
        )
        return self.references(key), None

    def ask_close(self, key: str | None) -> tuple:
        """The first click on "Close the round now": what closing means, for this round.
        Returns (confirmation, its question, the round number it is about)."""
        try:
            number = self.organizer.round_status(key)["round"]
        except Refused as exc:
            warn(exc)
            return gr.skip(), gr.skip(), gr.skip()
        question = (
            f"**Close round {number} now?** Its corrections become final; the worker trains "
            f"and judges every group's model, and round {number + 1} opens at once."
        )
        return SHOWN, question, number

    def close_round(self, key: str | None, expected: float | None = None) -> tuple:
        """Close the round the organizer confirmed (`expected`; None: the open one).
        Returns (status, confirmation)."""
        try:
            number = None if expected in (None, "") else int(expected)
            job = self.organizer.close_round(key, number)
        except (Refused, ValueError, TypeError) as exc:
            warn(Refused(str(exc)) if not isinstance(exc, Refused) else exc)
            return gr.skip(), HIDDEN
        ack(f"Round closed; training job {job} is queued and the next round is open.")
        return self.status(key), HIDDEN

    def live(self, key: str | None) -> tuple:
        """Timer: (status, jobs table, round results, round notes). Quiet while the page is
        locked."""
        if not self.organizer.authorized(key):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        campaign, _ = self.organizer.service.context()
        results = results_frame(self.organizer.round_results(key), campaign["n_groups"])
        jobs = self.organizer.jobs(key)
        return self.status(key), jobs_frame(jobs), results, notes_text(jobs)

    def runner(self, key: str | None) -> str:
        """Timer: where round jobs run and the latest one's state and cost; quiet while locked."""
        if not self.organizer.authorized(key):
            return gr.skip()
        return runner_text(self.organizer.runner_status(key))

    def job_action(self, action: str) -> Callable[[str | None, str | float | None], object]:
        """A handler that cancels or retries the job whose id is in the box."""

        def handler(key: str | None, typed_id: str | float | None):
            try:
                job_id = parse_id(typed_id, "job")
                if action == "cancel":
                    if not self.organizer.cancel_job(key, job_id):
                        raise Refused(f"Job {job_id} is not pending or running.")
                    ack(f"Job {job_id} cancelled.")
                else:
                    ack(
                        f"Job {job_id} queued again as job {self.organizer.retry_job(key, job_id)}."
                    )
            except Refused as exc:
                warn(exc)
                return gr.skip()
            return jobs_frame(self.organizer.jobs(key))

        return handler

    def corrections(self, key: str | None) -> object:
        try:
            return corrections_frame(self.organizer.recent_corrections(key))
        except Refused as exc:
            warn(exc)
            return gr.skip()

    @staticmethod
    def pick(data: gr.SelectData) -> tuple:
        """A click on a row of the corrections table fills the id boxes below it.
        Returns (correction id, participant id)."""
        row = data.row_value or []
        if len(row) != len(CORRECTION_COLUMNS):
            return gr.skip(), gr.skip()
        return row[CORRECTION_COLUMNS.index("id")], row[CORRECTION_COLUMNS.index("participant")]

    def ask_hide(self, key: str | None, typed_id: str | float | None) -> tuple:
        """The first click on "Hide correction": which one, and what hiding does.
        Returns (confirmation, its question)."""
        try:
            self.organizer.check_key(key)
            correction_id = parse_id(typed_id, "correction")
        except Refused as exc:
            warn(exc)
            return gr.skip(), gr.skip()
        return SHOWN, (
            f"**Hide correction {correction_id}?** It leaves training, evaluation, points and "
            "export (it is kept, marked hidden)."
        )

    def hide(self, key: str | None, typed_id: str | float | None) -> tuple:
        """Returns (corrections table, confirmation)."""
        try:
            correction_id = parse_id(typed_id, "correction")
            self.organizer.hide(key, correction_id)
        except Refused as exc:
            warn(exc)
            return gr.skip(), HIDDEN
        ack(f"Correction {correction_id} hidden: it leaves training, points and export.")
        return self.corrections(key), HIDDEN

    def confirm(self, verdict: str) -> Callable[[str | None, str | float | None], object]:
        """A handler that confirms the correction in the box as good ('endorse') or bad
        ('reject'): the organizer's verdict decides it, and it becomes a gold item."""

        def handler(key: str | None, typed_id: str | float | None) -> object:
            try:
                correction_id = parse_id(typed_id, "correction")
                self.organizer.confirm(key, correction_id, verdict)
            except Refused as exc:
                warn(exc)
                return gr.skip()
            word = "good" if verdict == "endorse" else "bad"
            ack(f"Correction {correction_id} confirmed {word}; it is now a gold item.")
            return self.corrections(key)

        return handler

    def ask_ban(self, key: str | None, participant_id: str | None, reason: str | None) -> tuple:
        """The first click on "Ban participant": who, and what a ban does.
        Returns (confirmation, its question)."""
        try:
            self.organizer.check_key(key)
            if not participant_id or not participant_id.strip():
                raise Refused("Type the participant's id first.")
        except Refused as exc:
            warn(exc)
            return gr.skip(), gr.skip()
        why = f' for "{html.escape(reason.strip()[:80])}"' if reason and reason.strip() else ""
        return SHOWN, (
            f"**Ban participant {html.escape(participant_id.strip()[:40])}{why}?** They can no "
            "longer act, and all their data leaves training, evaluation, points and export."
        )

    def ban(self, key: str | None, participant_id: str | None, reason: str | None) -> tuple:
        """Returns (corrections table, confirmation)."""
        try:
            if not participant_id or not participant_id.strip():
                raise Refused("Type the participant's id first.")
            self.organizer.ban(key, participant_id.strip(), (reason or "").strip())
        except Refused as exc:
            warn(exc)
            return gr.skip(), HIDDEN
        ack("Participant banned: their data leaves training and export.")
        return self.corrections(key), HIDDEN

    def export(self, key: str | None) -> Iterator[object]:
        """Build the export zip in a private temporary folder, hand it to Gradio (which copies
        it into its own cache, expired after CROWD_UPLOAD_TTL_S), then remove the folder: a
        generator, so the removal runs when Gradio asks for the next value, after the copy.
        A refused export creates nothing."""
        try:
            self.organizer.check_key(key)
        except Refused as exc:
            warn(exc)
            yield gr.skip()
            return
        try:
            with self.organizer.export_zip(key) as path:
                ack("Export ready.")
                yield str(path)
        except ValueError as exc:  # the export's own error saying why
            warn(exc)
            yield gr.skip()

    def export_model(
        self, key: str | None, typed_round: str | None, merged: bool
    ) -> Iterator[object]:
        """Build the model export zip (the champion after the typed round, empty: the last
        finished one; adapter or merged) in a private temporary folder, hand it to Gradio, then
        remove the folder, as `export` does. A refusal leaves no folder behind."""
        with tempfile.TemporaryDirectory(prefix="crowd-model-") as tmp:
            try:
                text = "" if typed_round is None else str(typed_round).strip()
                number = parse_id(text, "round") if text else None
                path = self.organizer.export_model_zip(key, Path(tmp), number, bool(merged))
            except ValueError as exc:  # Refused, or the export's own reason (no finished round)
                warn(exc)
                yield gr.skip()
                return
            ack("Model export ready.")
            yield str(path)
