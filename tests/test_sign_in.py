"""A campaign that wants a Hugging Face sign-in to correct: the organizer's setting (validated,
stored in `campaigns.require_login`, round-tripped by the form), and what an anonymous
volunteer's page says. Real SQLite; no model is needed. (The service's refusal of their
corrections is `CrowdService`'s, tested with it.)"""

from __future__ import annotations

import gradio as gr
import pytest

from crowd import views
from crowd.campaigns import (
    SIGN_IN_FIRST,
    CampaignSpec,
    create_campaign,
    may_correct,
    validate_campaign,
)
from crowd.limits import Refused
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui.campaign_form import FORM_FIELDS, form_changes, form_values
from crowd.ui.organizer import OrganizerHandlers
from crowd.ui.session import SessionHandlers
from storage import rounds as store
from storage.db import connect
from tests.apps import KEY


@pytest.fixture
def service(settings):
    return CrowdService(settings, None)


def campaign(service) -> dict:
    return service.context()[0]


def test_off_by_default_and_only_a_yes_or_no_is_accepted(service):
    assert campaign(service)["require_login"] == 0
    assert validate_campaign({"require_login": True}) == {"require_login": True}
    for bad in ("yes", 1, None):
        with pytest.raises(Refused, match="require_login"):
            validate_campaign({"require_login": bad})


def test_the_organizer_turns_it_on_and_a_refusal_changes_nothing(service):
    organizer = Organizer(service)
    with pytest.raises(Refused, match="require_login"):
        organizer.update_campaign(KEY, require_login="on", name="Renamed")
    assert campaign(service)["name"] != "Renamed" and campaign(service)["require_login"] == 0
    assert organizer.update_campaign(KEY, require_login=True)["require_login"] == 1


def test_the_form_round_trips_it(service):
    handlers = OrganizerHandlers(Organizer(service), orgs_of=lambda profile, token: [])
    values = dict(zip(FORM_FIELDS, form_values(campaign(service))))
    assert values["require_login"] is False
    values["require_login"] = True
    assert "saved" in handlers.save_settings(KEY, *values.values())
    assert dict(zip(FORM_FIELDS, form_values(campaign(service))))["require_login"] is True
    assert form_changes(tuple(values.values()))["require_login"] is True


def test_a_new_campaign_can_start_with_it(settings, db_path):
    with connect(db_path) as db:
        campaign_id = create_campaign(
            db, CampaignSpec(require_login=True), None, settings.data_dir, "2026-01-01T00:00:00"
        )
        assert store.get_campaign(db, campaign_id)["require_login"] == 1


def test_who_may_correct():
    anonymous, signed_in = {"hf_username": None}, {"hf_username": "ada"}
    assert may_correct({"require_login": 0}, anonymous)
    assert not may_correct({"require_login": 1}, anonymous)
    assert may_correct({"require_login": 1}, signed_in)


def test_an_anonymous_volunteer_is_told_to_sign_in_and_a_signed_in_one_is_not(service):
    Organizer(service).update_campaign(KEY, require_login=True)
    anonymous = service.join("Anon", True)
    signed_in = service.join("Ada", True, hf_username="ada")
    db_path = service.settings.db_path
    assert views.sign_in_needed(db_path, anonymous.participant_id)
    assert not views.sign_in_needed(db_path, signed_in.participant_id)

    notice, label = SessionHandlers(service, oauth=True).sign_in_gate(anonymous.token)
    assert notice["visible"] is True and SIGN_IN_FIRST in notice["value"]
    assert "You can chat" in notice["value"] and "Sign in with Hugging Face" in notice["value"]
    assert label == gr.update(value="Sign in to label")
    notice, _ = SessionHandlers(service, oauth=False).sign_in_gate(anonymous.token)
    assert "not available on this server" in notice["value"]

    hidden = SessionHandlers(service, oauth=True).sign_in_gate(signed_in.token)
    assert hidden == (gr.update(visible=False), gr.update(value="Label it"))


def test_with_the_setting_off_nobody_sees_the_notice(service):
    anonymous = service.join("Anon", True)
    assert not views.sign_in_needed(service.settings.db_path, anonymous.participant_id)
    notice, _ = SessionHandlers(service).sign_in_gate(anonymous.token)
    assert notice == gr.update(visible=False)


def test_an_unverifiable_token_changes_nothing_on_the_page(service):
    assert SessionHandlers(service).sign_in_gate("forged") == (gr.skip(), gr.skip())
    assert SessionHandlers(service).sign_in_gate(None) == (gr.skip(), gr.skip())


# -- issue 26: sign-in for reviews too, and an organisation's members only ----------------------


def test_reviewing_needs_the_sign_in_too(service):
    from crowd.review import Reviews

    Organizer(service).update_campaign(KEY, require_login=True)
    anonymous = service.join("Anon", True)
    with pytest.raises(Refused, match="sign in with Hugging Face"):
        Reviews(service).queue(anonymous.token)
    with pytest.raises(Refused, match="sign in with Hugging Face"):
        Reviews(service).review(anonymous.token, 1, "endorse")
    assert Reviews(service).queue(service.join("Ada", True, hf_username="ada").token) == []


def test_a_campaign_for_one_organisations_members(service):
    organizer = Organizer(service)
    for bad in ("", "has space", "-dash", "x" * 97):
        with pytest.raises(Refused, match="hf_org"):
            organizer.update_campaign(KEY, hf_org=bad)
    organizer.update_campaign(KEY, hf_org="crowd-lab")
    member = service.join("Ada", True, hf_username="ada", hf_orgs=["crowd-lab", "other"])
    outsider = service.join("Bob", True, hf_username="bob", hf_orgs=["other"])
    anonymous = service.join("Cy", True)
    campaign = service.context()[0]
    with connect(service.settings.db_path) as db:
        people = {p["id"]: p for p in db.query("SELECT * FROM participants")}
    assert may_correct(campaign, people[member.participant_id])
    assert not may_correct(campaign, people[outsider.participant_id])
    assert not may_correct(campaign, people[anonymous.participant_id])
    notice, _ = SessionHandlers(service, oauth=True).sign_in_gate(outsider.token)
    assert "members of the Hugging Face organisation crowd-lab" in notice["value"]
    # joining again refreshes the membership: Bob joined the organisation since
    service.join("Bob", True, hf_username="bob", hf_orgs=["crowd-lab"])
    assert not views.sign_in_needed(service.settings.db_path, outsider.participant_id)


def test_the_page_keeps_a_signed_in_persons_organisations_from_the_oauth_profile(service):
    """The userinfo Gradio keeps after sign-in lists the person's organisations (with the
    `read-memberships` scope); `hub_orgs` reads them there before it would ask the Hub."""
    Organizer(service).update_campaign(KEY, hf_org="crowd-lab")
    userinfo = {"preferred_username": "ada", "name": "Ada", "picture": "", "profile": ""}
    handlers = SessionHandlers(service, oauth=True)
    member = gr.OAuthProfile({**userinfo, "orgs": [{"preferred_username": "crowd-lab"}]})
    token, *_ = handlers.join("Ada", True, member, None)
    assert not views.sign_in_needed(service.settings.db_path, service.resume(token).participant_id)
    userinfo.update(preferred_username="bob", name="Bob")
    outsider = gr.OAuthProfile({**userinfo, "orgs": [{"preferred_username": "elsewhere"}]})
    token, *_ = handlers.join("Bob", True, outsider, None)
    assert views.sign_in_needed(service.settings.db_path, service.resume(token).participant_id)
