"""The UI's handlers against a real database on the tiny model: what the page shows after each
action, what is stored, and that refusals become warnings that store nothing."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace as with_settings_replace
from pathlib import Path

import gradio as gr
import pytest

from crowd import views
from crowd.limits import Limits
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui import build_app, launch_options
from crowd.ui.api import VolunteerApi
from crowd.ui.campaign_form import FORM_FIELDS, form_values
from crowd.ui.chat import ChatHandlers, ChatTab
from crowd.ui.components import banner_html, reason_text
from crowd.ui.organizer import OrganizerHandlers
from crowd.ui.session import SessionHandlers
from storage import queries
from storage.db import connect
from tests.apps import KEY

ROOT = Path(__file__).resolve().parent.parent
SKIP = gr.skip()


@pytest.fixture
def service(settings, new_generation):
    generation = new_generation(max_new_tokens=6)
    yield CrowdService(settings, generation, limits=Limits(chats_per_minute=100))
    generation.close()


@pytest.fixture
def page(service):
    return SessionHandlers(service), ChatHandlers(service)


def rows_in(service, table: str) -> int:
    with connect(service.settings.db_path) as db:
        return db[table].count


def joined(session: SessionHandlers, name: str = "Ada") -> str:
    token, tab, join_screen, main_screen = session.join(name, True)
    assert main_screen == gr.update(visible=True) and join_screen == gr.update(visible=False)
    return token


def chat(chat_handlers: ChatHandlers, token: str, tab: ChatTab, text: str = "Hello"):
    """Send `text`; returns (chat rows, tab, message box) as the last step shows them."""
    shown, tab, box, *_ = list(chat_handlers.send(token, tab, text))[-1]
    return shown["value"], tab, box


def rewrite(handlers: ChatHandlers, token: str, tab: ChatTab, index: int, text: str):
    """Click chat row `index`, type `text` in the editor, save. Returns (chat rows, tab, ack)."""
    tab, *_ = handlers.open_editor(tab, gr.SelectData(None, {"index": index, "value": ""}))
    shown, tab, ack_text, *_ = handlers.save_edit(token, tab, text)
    return (shown["value"] if isinstance(shown, dict) else None), tab, ack_text


# -- arrival ----------------------------------------------------------------------------------


def test_a_visitor_without_a_token_sees_the_terms_and_nothing_is_stored(page):
    session, _ = page
    # The page opens on the join screen; a load without a stored identity leaves the page as it
    # is, so a visitor who joined while a slow load was on its way is not sent back.
    assert session.enter(None) == (SKIP,) * 5
    with pytest.warns(UserWarning, match="consent"):
        assert session.join("Ada", False) == (SKIP,) * 4
    with pytest.warns(UserWarning, match="A display name is"):
        session.join("<b>Ada</b>", True)
    assert rows_in(session.service, "participants") == 0


def test_a_reload_resumes_and_a_forged_token_goes_back_to_joining(page):
    session, _ = page
    token = joined(session)
    again, _, _, main_screen, _ = session.enter(token)
    assert (again, main_screen) == (token, gr.update(visible=True))
    with pytest.warns(UserWarning, match="identity"):
        forged, _, join_screen, _, _ = session.enter(token[:-3] + "abc")
    assert forged is None and join_screen == gr.update(visible=True)


# -- chat and corrections ---------------------------------------------------------------------


def test_send_streams_and_remembers_which_row_is_which_message(page):
    session, handlers = page
    token = joined(session)
    steps = list(handlers.send(token, ChatTab(), "Hi"))
    disabled, enabled = gr.update(interactive=False), gr.update(interactive=True)
    assert steps[0][4:] == (disabled,) * 4 and steps[-1][4:] == (enabled,) * 4
    rows, tab, box = chat(handlers, token, ChatTab())
    assert [r["role"] for r in rows] == ["user", "assistant"] and box == ""
    assert tab.rows[0] is None and tab.rows[1] is not None
    rows, tab, _ = chat(handlers, token, tab, "And then?")
    assert len(rows) == 4 and len(tab.rows) == 4
    assert rows_in(session.service, "conversations") == 2  # "Hi" above, then this one


def test_a_refused_message_puts_the_page_back_and_stores_nothing(page):
    session, handlers = page
    token = joined(session)
    with pytest.warns(UserWarning, match="HTML"):
        rows, tab, box = chat(handlers, token, ChatTab(), "<script>alert(1)</script>")
    assert rows == [] and box == "<script>alert(1)</script>"
    assert rows_in(session.service, "messages") == 0


def test_a_rewrite_is_stored_shown_marked_edited_and_can_be_undone(page):
    session, handlers = page
    token = joined(session)
    rows, tab, _ = chat(handlers, token, ChatTab())
    original = rows[1]["content"]
    tab, editor, model_text, box = handlers.open_editor(
        tab, gr.SelectData(None, {"index": 1, "value": original})
    )
    assert editor == gr.update(visible=True) and box == original
    assert html_escape(original) in model_text  # the model's text stays visible while editing
    shown, tab, ack_text, undo, editor, _ = handlers.save_edit(token, tab, "What a lovely day!")
    rows = shown["value"]
    assert rows[1]["content"] == "What a lovely day!" and "undo" in ack_text
    assert undo == gr.update(visible=True) and editor == gr.update(visible=False)
    assert rows[2]["content"] == original and rows[2]["metadata"]["title"].startswith("✎ Edited")
    with connect(session.service.settings.db_path) as db:
        stored = queries.get_correction(db, tab.last.correction_id)
    assert (stored["kind"], stored["rewrite"], stored["original"]) == (
        "rewrite",
        "What a lovely day!",
        original,
    )
    shown, tab, _, undo, _ = handlers.undo(token, tab)
    assert [r["content"] for r in shown["value"]] == ["Hello", original] and tab.last is None
    assert undo == gr.update(visible=False)  # nothing left to undo: no button
    with connect(session.service.settings.db_path) as db:
        assert queries.get_correction(db, stored["id"])["undone_at"] is not None


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_my_own_messages_open_no_editor_and_someone_elses_reply_is_refused(page):
    session, handlers = page
    ada, bob = joined(session, "Ada"), joined(session, "Bob")
    rows, tab, _ = chat(handlers, ada, ChatTab())
    opened = handlers.open_editor(tab, gr.SelectData(None, {"index": 0, "value": "Hello"}))
    assert opened[1:] == (SKIP, SKIP, SKIP)  # a click on my own message: nothing to rewrite
    handlers.open_editor(tab, gr.SelectData(None, {"index": 1, "value": ""}))
    with pytest.warns(UserWarning, match="does not exist"):
        handlers.save_edit(bob, tab, "Mine now")  # Bob with Ada's rows
    assert rows_in(session.service, "corrections") == 0


def test_thumbs_keep_one_rating_per_reply_and_their_highlight(page):
    session, handlers = page
    token = joined(session)
    _, tab, _ = chat(handlers, token, ChatTab())
    for liked in (True, False):
        shown, tab, *_ = handlers.like(
            token, tab, gr.LikeData(None, {"index": 1, "value": "x", "liked": liked})
        )
    assert shown["feedback_value"] == ["Dislike"]
    rows, tab, _ = chat(handlers, token, tab, "More?")
    assert handlers.chat(token, tab)["feedback_value"] == ["Dislike", None]  # kept on redraw
    with connect(session.service.settings.db_path) as db:
        live = [r for r in db.table("corrections").rows if not (r["undone_at"] or r["replaced_at"])]
    assert [(r["kind"], r["rating"]) for r in live] == [("rating", -1)]
    shown, tab, _, undo = handlers.like(
        token, tab, gr.LikeData(None, {"index": 1, "value": "x", "liked": ""})
    )
    assert shown["feedback_value"] == [None, None]  # the same thumb again: withdrawn
    assert tab.last is None and undo == gr.update(visible=False)  # and nothing left to undo


def test_labels_and_ab_choices(page):
    session, handlers = page
    token = joined(session)
    rows, tab, _ = chat(handlers, token, ChatTab())
    with pytest.warns(UserWarning, match="not one of"):
        handlers.label(token, tab, "hunger")
    tab, *_ = handlers.label(token, tab, "joy")
    with pytest.warns(UserWarning, match="another reply first"):
        handlers.choose(token, tab, "a")
    tab, panel, pair = list(handlers.another(token, tab))[-1]
    assert panel == gr.update(visible=True) and tab.pair is not None
    assert "Reply A" in pair and "Reply B" in pair
    tab, _, _, panel = handlers.chooser("b")(token, tab)
    assert panel == gr.update(visible=False)
    with connect(session.service.settings.db_path) as db:
        kinds = {r["kind"]: r for r in db.table("corrections").rows}
    assert kinds["emotion"]["emotion"] == "joy" and kinds["choice"]["choice"] == "b"


# -- the live page ----------------------------------------------------------------------------


def test_tick_skips_unchanged_boards_and_a_new_round_resets_the_chat(page):
    session, handlers = page
    token = joined(session)
    rows, tab, _ = chat(handlers, token, ChatTab())
    tab, *_ = handlers.label(token, tab, "joy")
    banner, round_now, stamp, _, _, seen, mine, *_ = session.tick(token, None)
    assert "Ada" in banner and "Round <b>1</b>" in banner and round_now[0] == 1
    assert mine.startswith("### Your points: 0")
    assert session.new_round(tab, round_now)[:2] == (SKIP, tab) and tab.round == 1
    assert session.tick(token, stamp, seen)[6:] == (SKIP,) * 7
    Organizer(session.service).close_round(KEY)
    banner, round_now, _, _, _, _, mine, *_ = session.tick(token, stamp, seen)
    assert "Round <b>2</b>" in banner and mine != SKIP  # the round is part of the stamp
    rows, tab, ack_text, undo, *_ = session.new_round(tab, round_now)
    assert rows == [] and tab.round == 2 and tab.conversation_id is None
    assert ack_text == "" and undo == gr.update(visible=False)  # nothing left to undo


def test_a_reviewers_page_after_the_round_agrees_everywhere_and_survives_a_reload(page):
    """Review points have no group: the page that crashed on them (issue 27) now shows them as
    review points, and the banner, the notice, the Points tab and the leaderboard say the same
    right after the round ends and after a reload (a fresh tick without a stamp)."""
    from storage import rounds as store

    session, handlers = page
    token = joined(session, "Rita Reviewer")
    Organizer(session.service).close_round(KEY)
    who = session.service.resume(token).participant_id
    with connect(session.service.settings.db_path) as db, db.atomic():  # the worker's result
        round_1 = db.execute("SELECT id, champion_id FROM rounds WHERE number = 1").fetchone()
        db.execute(
            "UPDATE rounds SET state = 'done', winner_id = ?, improved = 0 WHERE id = ?",
            [round_1[1], round_1[0]],
        )
        reason = {"rule": "review", "agreeing_reviews": 2, "decided_reviews": 3}
        store.add_points(
            db,
            [
                {
                    "round_id": round_1[0],
                    "participant_id": who,
                    "group_index": None,
                    "amount": 2.0,
                    "rule": "review",
                    "reason": reason,
                }
            ],
            "2026-01-01T00:00:00Z",
        )
    for stamp, seen in ((None, "unseen"), (None, None)):  # after the round, then a reload
        banner, _, _, news, _, _, mine, ledger, people, _, last, *_ = session.tick(
            token, stamp, seen
        )
        assert 'Your points: <b class="crowd-points">2</b>' in banner
        assert "You earned **2 points**" in news["value"] and "2 of your 3" in news["value"]
        assert mine.startswith("### Your points: 2")
        assert list(ledger["group"]) == ["(reviews)"] and list(ledger["points"]) == [2.0]
        assert list(people["name"]) == ["Rita Reviewer"] and list(people["points"]) == [2.0]
        assert last.startswith("### Round 1: the champion stayed")


def test_the_banner_and_reasons_render_as_inert_text():
    banner = {
        "task": "emotion",
        "target_emotion": "<img src=x>",
        "round": 1,
        "seconds_left": 75,
        "group_name": "Blue",
        "group_colour": '#3b82f6"><b>',
        "group_corrections": 1,
        "points": 2.5,
    }
    html = banner_html("<script>x</script>", banner)
    assert "<script>" not in html and "<img" not in html and '"><b>' not in html
    assert "1:15 left" in html and "1</b> correction " in html
    assert reason_text({"rank": 1, "share": 0.3333333, "members": ["a"]}) == "rank 1, share 0.333"
    assert (
        reason_text({"rule": "paper", "group_rank": 0, "n_groups": 3, "group_score": 0.5})
        == "Paper rule: your group ranked 1st of 3"
    )
    assert reason_text(
        {"rule": "shapley", "group_rank": 1, "n_groups": 3, "items": 2, "share_of_group": 0.25}
    ) == (
        "Shapley rule: your group ranked 2nd of 3, "
        "your share of its points 25%, 2 of your "
        "corrections counted"
    )


def test_rounds_done_counts_finished_rounds(service):
    campaign, _ = service.context()
    assert views.rounds_done(service.settings.db_path, campaign["id"]) == 0


# -- organizer --------------------------------------------------------------------------------


@pytest.fixture
def organizer_page(service):
    return OrganizerHandlers(Organizer(service), orgs_of=lambda profile, token: ["crowd-org"])


def test_the_organizer_page_unlocks_only_with_the_key(organizer_page):
    with pytest.warns(UserWarning, match="not the organizer key"):
        locked = organizer_page.unlock("wrong")
    assert locked[1] == gr.update(visible=False) and locked[3:] == (SKIP,) * len(FORM_FIELDS)
    key, panel, status, *form = organizer_page.unlock(KEY)
    assert panel == gr.update(visible=True) and "round 1 is open" in status
    assert dict(zip(FORM_FIELDS, form))["task"] == "emotion"


def test_settings_round_trip_and_bad_values_are_refused(organizer_page):
    campaign, _ = organizer_page.organizer.service.context()
    values = dict(zip(FORM_FIELDS, form_values(campaign)))
    values.update(n_groups=4.0, target_emotion="gratitude", prompts="Hi?\n\nHow are you?\n")
    assert "saved" in organizer_page.save_settings(KEY, *values.values())
    campaign, _ = organizer_page.organizer.service.context()
    assert (campaign["n_groups"], campaign["target_emotion"]) == (4, "gratitude")
    with pytest.warns(UserWarning, match="not allowed"):
        organizer_page.save_settings(KEY, *{**values, "task": "jokes"}.values())
    with pytest.warns(UserWarning, match="Organizer access only"):
        organizer_page.save_settings("wrong", *{**values, "n_groups": 2.0}.values())
    assert organizer_page.organizer.service.context()[0]["n_groups"] == 4


def test_the_form_sets_review_and_the_per_person_cap(organizer_page):
    """What docs/results/poisoning.md tells an organizer to set is on the form."""
    campaign, _ = organizer_page.organizer.service.context()
    values = dict(zip(FORM_FIELDS, form_values(campaign)))
    assert (values["reviews_on"], values["min_reviews"], values["person_cap"]) == (True, 2, 0.25)
    values.update(reviews_on=False, min_reviews=3.0, person_cap=0.5)
    assert "saved" in organizer_page.save_settings(KEY, *values.values())
    campaign, _ = organizer_page.organizer.service.context()
    assert (campaign["reviews_on"], campaign["min_reviews"], campaign["person_cap"]) == (0, 3, 0.5)
    for bad in ({"min_reviews": 0.0}, {"person_cap": 0.01}):
        with pytest.warns(UserWarning, match="not allowed"):
            organizer_page.save_settings(KEY, *{**values, **bad}.values())
    campaign, _ = organizer_page.organizer.service.context()
    assert (campaign["min_reviews"], campaign["person_cap"]) == (3, 0.5)  # nothing changed


def test_close_round_asks_first_then_jobs_and_results_show_live(organizer_page):
    with pytest.warns(UserWarning, match="Organizer access only"):
        organizer_page.ask_close(None)
    confirm, question, about = organizer_page.ask_close(KEY)
    assert confirm == gr.update(visible=True) and about == 1
    assert question.startswith("**Close round 1 now?**")
    assert "round 2 is open" not in organizer_page.status(KEY)  # asking closed nothing
    status, confirm = organizer_page.close_round(KEY, float(about))
    assert "round 2 is open" in status and confirm == gr.update(visible=False)
    with pytest.warns(UserWarning, match="Round 1 is not the open round any more"):
        organizer_page.close_round(KEY, 1.0)  # a second confirmation of the same question
    assert "round 2 is open" in organizer_page.status(KEY)
    _, jobs, results, notes = organizer_page.live(KEY)
    assert list(jobs["status"]) == ["pending"]
    assert list(results["round"]) == [2, 1] and list(results["winner"]) == ["(open)", "(judging)"]
    assert notes == ""  # the round closes into its bundle (and its notes) when the job runs
    assert organizer_page.live("wrong") == (SKIP, SKIP, SKIP, SKIP)
    jobs = organizer_page.job_action("cancel")(KEY, float(jobs["id"][0]))
    assert list(jobs["status"]) == ["cancelled"]


def test_round_results_show_the_winner_the_metric_per_group_and_the_points():
    from crowd.ui.organizer_tables import results_frame
    from crowd.views import RoundResult

    frame = results_frame(
        [
            RoundResult(
                1, "done", "Blue", "emotion_l2", True, {"champion": 0.9, "Blue": 0.7}, 6, 3
            ),
            RoundResult(2, "done", None, "emotion_l2", True, {"champion": 0.7, "Coral": 0.8}, 0, 0),
        ],
        n_groups=3,
    )
    first = frame.set_index("round").loc[1]
    assert (first["winner"], first["metric"]) == ("Blue", "emotion_l2 (lower is better)")
    assert (first["champion"], first["Blue"], first["Coral"]) == (0.9, 0.7, "—")
    assert (first["points awarded"], first["people"]) == ("6", 3)
    assert frame.set_index("round").loc[2]["winner"] == "champion stayed"


def test_moderation_and_export(organizer_page, page):
    session, handlers = page
    token = joined(session)
    rows, tab, _ = chat(handlers, token, ChatTab())
    _, tab, _ = rewrite(handlers, token, tab, 1, "A kinder reply.")
    handlers.label(token, tab, "joy")
    table = organizer_page.corrections(KEY)
    assert list(table["value"]) == ["joy", "A kinder reply."]
    # each row shows the text it is about: the label the rewrite, the rewrite the model's reply
    assert list(table["reply"]) == ["A kinder reply.", rows[1]["content"]]
    row = table.iloc[1].tolist()  # the rewrite
    picked = organizer_page.pick(
        gr.SelectData(None, {"index": [1, 2], "value": row[2], "row_value": row})
    )
    assert picked == (table["id"][1], table["participant"][1])
    confirm, question = organizer_page.ask_hide(KEY, float(picked[0]))
    assert confirm == gr.update(visible=True) and "Hide correction" in question
    assert list(organizer_page.corrections(KEY)["state"]) == ["live", "live"]  # asked only
    hidden, confirm = organizer_page.hide(KEY, float(picked[0]))
    assert list(hidden["state"]) == ["live", "hidden"] and confirm == gr.update(visible=False)
    with pytest.warns(UserWarning, match="no participant"):
        organizer_page.ban(KEY, "nobody", "")
    confirm, question = organizer_page.ask_ban(KEY, table["participant"][0], "<b>spam</b>")
    assert "Ban participant" in question and "<b>" not in question
    organizer_page.ban(KEY, table["participant"][0], "spam")
    with pytest.warns(UserWarning, match="suspended"):
        chat(handlers, token, tab)
    download = organizer_page.export(KEY)
    path = Path(next(download))  # Gradio copies it into its cache, then asks for more
    assert zipfile.is_zipfile(path) and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(StopIteration):
        next(download)
    assert not path.parent.exists()  # the export's folder is gone once handed over
    folders = set(Path(tempfile.gettempdir()).glob("crowd-export-*"))
    with pytest.warns(UserWarning, match="Organizer access only"):
        assert next(organizer_page.export("")) == SKIP
    assert set(Path(tempfile.gettempdir()).glob("crowd-export-*")) == folders  # none made


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uploads_are_capped_and_expire_and_wrong_keys_back_off_per_address(service):
    """An anonymous upload larger than CROWD_MAX_UPLOAD_MB is refused (413) and nothing of it
    is kept; a smaller one is tracked for deletion after CROWD_UPLOAD_TTL_S. Wrong organizer
    keys sent through the HTTP API back off the address that sent them."""
    import httpx
    from gradio_client import Client

    settings = service.settings
    organizer = Organizer(service)
    demo = build_app(service, organizer, oauth=False)
    assert demo.delete_cache == (360, settings.upload_ttl_s)
    options = {**launch_options(with_settings_replace(settings, max_upload_mb=1))}
    demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, **options)
    try:
        url = f"{demo.local_url}gradio_api/upload"
        big = httpx.post(url, files={"files": ("big.bin", bytes(2 << 20))}, timeout=30)
        assert big.status_code == 413 and not demo.upload_file_set
        small = httpx.post(url, files={"files": ("small.txt", b"hello")}, timeout=30)
        assert small.status_code == 200
        assert set(small.json()) == demo.upload_file_set  # what delete_cache will expire
        guesser = Client(demo.local_url, verbose=False)
        for n in range(6):
            guesser.predict(f"guess-{n}", api_name="/organizer_unlock")
        assert organizer.guard.wait_s("127.0.0.1") > 0 and organizer.guard.wait_s("10.7.7.7") == 0
    finally:
        demo.close()


def test_an_organisation_pass_authorizes_and_a_tampered_one_does_not(service, with_settings):
    organizer = Organizer(
        CrowdService(
            with_settings(service.settings, organizer_hf_org="crowd-org", organizer_secret=None),
            None,
        )
    )
    handlers = OrganizerHandlers(organizer, orgs_of=lambda profile, token: ["crowd-org"])
    key, panel, *_ = handlers.unlock(
        "",
        profile=gr.OAuthProfile(
            {"name": "A", "preferred_username": "a", "profile": "", "picture": ""}
        ),
    )
    assert panel == gr.update(visible=True) and organizer.authorized(key)
    # One signature character changed, away from its end: base64's last character carries
    # ignored bits, so editing only the end could leave the same signature (a rare false pass).
    tampered = key[:-5] + ("A" if key[-5] != "A" else "B") + key[-4:]
    assert tampered != key and not organizer.authorized(tampered)
    outsider = OrganizerHandlers(organizer, orgs_of=lambda profile, token: ["other-org"])
    with pytest.warns(UserWarning):
        assert outsider.unlock(
            "",
            profile=gr.OAuthProfile(
                {"name": "B", "preferred_username": "b", "profile": "", "picture": ""}
            ),
        )[1] == gr.update(visible=False)


# -- the app and its API ----------------------------------------------------------------------


def test_the_app_builds_with_named_endpoints_and_the_api_refuses_cleanly(service):
    demo = build_app(service, Organizer(service), oauth=False)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {
        "join",
        "send",
        "label",
        "undo",
        "api_chat",
        "api_chat_stream",
        "api_rewrite",
        "organizer_close",
        "organizer_export",
    } <= names
    api = VolunteerApi(service)
    token = api.api_join("Ada", True)
    reply = api.api_chat(token, None, "Hello")
    assert api.api_rewrite(token, reply["message_id"], "Better.") > 0
    with pytest.raises(gr.Error, match="not one of"):
        api.api_label(token, reply["message_id"], "hunger")
    with pytest.raises(gr.Error, match="identity"):
        api.api_chat("forged", None, "Hello")
    steps = list(api.api_chat_stream(token, reply["conversation_id"], "Again"))
    assert [s["message_id"] for s in steps[:-1]] == [None] * (len(steps) - 1)
    assert steps[-1]["message_id"] > reply["message_id"] and steps[-1]["text"]
    with pytest.raises(gr.Error, match="identity"):
        list(api.api_chat_stream("forged", None, "Hello"))


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"CROWD_PORT": "eighty"}, "CROWD_PORT"),
        ({"CROWD_DATA_DIR": "/proc/crowd"}, "CROWD_DATA_DIR"),
        ({"CROWD_BASE_MODEL": "/nonexistent/model"}, "CROWD_BASE_MODEL"),
    ],
)
def test_the_app_refuses_a_bad_setting_with_one_line_naming_it(tmp_path, env, variable):
    env = {**os.environ, "CROWD_DATA_DIR": str(tmp_path / "data"), "CROWD_WORKER": "0", **env}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"crowd: {variable}=")
