"""The whole sequence that broke (issue 27), in a real browser against the real app (`app.py`,
its worker included) on the tiny model: a volunteer rewrites a reply, asks for another reply and
picks A, labels the rewritten reply and rates it; two volunteers from other networks review her
corrections; the organizer closes the round (confirming it); the worker crowns her group. Both
pages then stay up for 12 s (three of their polls) with no traceback in the app's log, and each
page's banner, Points tab and leaderboard agree. Every stored correction is compared with the texts read from
the page. Screenshots at 1400 x 900 and 390 x 844 (after joining, editing, A/B, after the
round) go to the folder the test prints."""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import replace

import pytest
from loopback import Forwarder, network_address
from test_browser import (
    ARGS,
    CHROMIUM,
    HAPPY,
    KEY,
    ROOT,
    app_env,
    free_port,
    open_tab,
    prepare_campaign,
    run_app,
)

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots" / "issue-27"
DESKTOP = {"viewport": {"width": 1400, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
STARTER = "Hello"  # the organizer's first suggested prompt, and the reference pair's
AFTER_THE_RESULT_S = 12  # how long both pages stay up after the round's result: 3 polls each


@pytest.fixture
def app(settings, tmp_path):
    """The real app with its worker, on a preference campaign that crowns deterministically: one
    correction trains a group, and the organizer's reference pair (the rewrite preferred to a
    rude reply, after the starter) judges it. Reviews are on (the default: two endorsements)."""
    settings = replace(settings, organizer_secret=KEY)
    prepare_campaign(settings, prompts=[STARTER, "Any plans for tonight?"])
    port = free_port()
    for url in run_app(settings, tmp_path, app_env(settings, port, worker=True), port):
        yield url, settings.db_path, tmp_path / "app.log"


def test_rewrite_pick_label_review_close_crown_and_the_pages_agree(app):
    from playwright.sync_api import expect, sync_playwright

    url, db_path, log = app
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {SHOTS}")
    expect.set_options(timeout=60_000)  # a shared 2-core machine can be slow; failures still fail
    with (
        sync_playwright() as playwright,
        Forwarder(url, network_address(1)) as bobs_network,
        Forwarder(url, network_address(2)) as cys_network,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            ada = browser.new_context(**DESKTOP).new_page()
            bob = browser.new_context(**PHONE).new_page()
            cy = browser.new_context(**DESKTOP).new_page()
            join(ada, url, "Ada Lovelace", "desktop", expect)
            join(bob, bobs_network.url, "Bob Phone", "phone", expect)
            shown = correct(ada, db_path, expect)
            compare_but_do_not_pick(bob, db_path, expect)
            assert_stored_as_shown(db_path, shown)
            join(cy, cys_network.url, "Cy Reviewer", None, expect)
            for reviewer in (bob, cy):
                endorse_everything(reviewer, expect)
            close_and_confirm(browser.new_context(**DESKTOP).new_page(), url, expect)
            for page, size in ((ada, "desktop"), (bob, "phone")):
                see_the_result(page, size, expect)
            time.sleep(AFTER_THE_RESULT_S)  # the page polls every 4 s meanwhile
            assert "Traceback" not in log.read_text()
            for page in (bob, ada):
                the_page_agrees(page, expect)
        finally:
            browser.close()


def join(page, url: str, name: str, size: str | None, expect) -> None:
    """Join; the first screen shows the message box and the organizer's suggested prompts."""
    page.goto(url)
    expect(page.locator("#terms")).to_contain_text("CC BY 4.0")  # the page's load has run
    page.locator("#name").locator("input, textarea").first.fill(name)
    page.locator("#consent input").check()
    page.locator("#join").click()
    expect(page.locator("#banner")).to_contain_text(name)
    expect(page.locator("#chat")).to_contain_text(STARTER)  # a one-click starter
    box = page.locator("#message textarea").bounding_box()
    assert box["y"] + box["height"] <= page.viewport_size["height"], "message box below the fold"
    if size:
        shoot(page, f"joined-{size}")


def correct(page, db_path, expect) -> dict:
    """The sequence: starter, rewrite, Another reply, pick A, label, thumbs up, next turn.
    Returns the texts read from the page at each step."""
    mark = newest_reply(db_path)
    page.locator("#chat").get_by_text(STARTER, exact=True).click()  # the starter sends it
    original = reply_done(page, db_path, mark, expect)
    last_reply_buttons = page.locator("#chat .message-buttons-left").last
    page.locator("#rewrite").click()
    editor = page.locator("#editor")
    expect(editor.locator("#editor-original")).to_contain_text(original)  # visible while editing
    expect(editor.locator("textarea")).to_have_value(original)
    page.locator("#editor-text textarea").fill(HAPPY)
    shoot(page, "editing-desktop")
    page.locator("#editor-text textarea").press("Enter")  # Enter saves on a desktop
    expect(page.locator("#ack")).to_contain_text("Saved your rewrite")
    expect(editor).to_be_hidden()
    expect(page.locator("#chat")).to_contain_text("Edited by you")
    shown = {"original": original, "rewritten": bubble_texts(page)[-1]}

    page.locator("#another").click()
    pair = page.locator("#ab-pair .crowd-ab-pair.ready")
    expect(pair).to_be_visible()
    shown["a"] = pair.locator(".crowd-ab-a .crowd-ab-text").inner_text()
    shown["b"] = pair.locator(".crowd-ab-b .crowd-ab-text").inner_text()
    under(page, "#choose-a", "#ab-pair")
    shoot(page, "ab-desktop")
    page.locator("#choose-a").click()
    expect(page.locator("#ack")).to_contain_text("Saved your choice")
    expect(page.locator("#ab")).to_be_hidden()

    page.locator("#emotion input").click()
    page.keyboard.type("joy")
    page.keyboard.press("Enter")
    page.locator("#label").click()
    expect(page.locator("#ack")).to_contain_text("Saved your emotion label")
    shown["labelled"] = bubble_texts(page)[-1]
    last_reply_buttons.get_by_role("button", name="Like", exact=True).click()
    expect(page.locator("#ack")).to_contain_text("Saved your rating")
    mark = newest_reply(db_path)
    page.locator("#message textarea").fill("Thanks!")
    page.locator("#message textarea").press("Enter")
    reply_done(page, db_path, mark, expect)
    liked = page.locator("#chat .message-buttons-left").first
    expect(liked.get_by_role("button", name="Liked")).to_be_visible()  # kept after an update
    shown["rated"] = bubble_texts(page)[0]
    return shown


def compare_but_do_not_pick(page, db_path, expect) -> None:
    """A phone: the editor and the A/B panel, looked at, nothing stored."""
    mark = newest_reply(db_path)
    page.locator("#chat").get_by_text(STARTER, exact=True).click()
    reply_done(page, db_path, mark, expect)
    page.locator("#rewrite").click()
    expect(page.locator("#editor-text textarea")).to_be_visible()
    shoot(page, "editing-phone")
    page.locator("#editor-cancel").click()
    expect(page.locator("#editor")).to_be_hidden()
    page.locator("#another").click()
    expect(page.locator("#ab-pair .crowd-ab-pair.ready")).to_be_visible()
    under(page, "#choose-a", "#ab-pair")
    shoot(page, "ab-phone")


def newest_reply(db_path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]


def reply_done(page, db_path, after: int, expect) -> str:
    """Wait until the reply to a message sent after message `after` is stored and the page is
    ready again (Send comes back when the reply is drawn as stored); returns its text."""
    deadline, newest = time.monotonic() + 120, None
    with sqlite3.connect(db_path) as db:
        while newest is None and time.monotonic() < deadline:
            newest = db.execute(
                """SELECT content FROM messages WHERE role = 'assistant' AND id > ?
                   AND alternative_of IS NULL ORDER BY id DESC LIMIT 1""",
                [after],
            ).fetchone()
            time.sleep(0.2)
    assert newest is not None, "no reply was stored"
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(BUBBLES).last).to_have_text(newest[0])
    return newest[0]


BUBBLES = '#chat .message:not(.thought) > [data-testid="bot"]'  # "edited" markers left out


def bubble_texts(page) -> list[str]:
    """The replies' texts as the chat shows them."""
    bubbles = page.locator(BUBBLES)
    return [bubbles.nth(i).inner_text().strip() for i in range(bubbles.count())]


def under(page, button: str, panel: str) -> None:
    """The pick buttons sit right under the two replies."""
    page.locator(button).scroll_into_view_if_needed()
    replies, pick = page.locator(panel).bounding_box(), page.locator(button).bounding_box()
    assert 0 <= pick["y"] - (replies["y"] + replies["height"]) < 80
    assert pick["y"] + pick["height"] <= page.viewport_size["height"]


def assert_stored_as_shown(db_path, shown: dict) -> None:
    """Each stored correction holds the texts the page showed when it was made."""
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = {r["kind"]: dict(r) for r in db.execute("SELECT * FROM corrections")}
    assert set(rows) == {"rewrite", "choice", "emotion", "rating"}
    assert (rows["rewrite"]["rewrite"], rows["rewrite"]["original"]) == (
        shown["rewritten"],
        shown["original"],
    )
    assert shown["rewritten"] == HAPPY and shown["a"] == HAPPY
    choice = rows["choice"]
    assert (choice["shown"], choice["other_reply"], choice["choice"]) == (
        shown["a"],
        shown["b"],
        "a",
    )
    assert choice["prompt"] == f'[{{"role": "user", "content": "{STARTER}"}}]'
    assert rows["emotion"]["shown"] == shown["labelled"] == HAPPY
    assert rows["rating"]["shown"] == shown["rated"] == HAPPY and rows["rating"]["rating"] == 1


def endorse_everything(page, expect) -> None:
    """Review all that is dealt as an honest reviewer would: endorse Ada's reviewable corrections
    (her rewrite, pick and label), and of the gold items dealt unmarked among them (the
    reference pair shown as a rewrite, at a place keyed by the server's secret) endorse the
    good one and reject the one that rewrites the happy reply into "Go away."."""
    open_tab(page, "Review")
    item = page.locator("#review-item")
    expect(item).to_contain_text("They asked")
    answered = 0
    while "Nothing to review" not in (before := settled(item, expect)):
        assert answered < 5, f"more to review than Ada's three corrections and 2 gold: {before}"
        bad = "Their rewrite: Go away." in before
        page.locator("#review-reject" if bad else "#review-endorse").click()
        expect(item).not_to_have_text(before)
        answered += 1
    assert answered >= 3


PROGRESS = re.compile(r"^\s*(processing|[\d./]+\s*s)\b")  # Gradio's overlay: "0.1s", ...


def settled(element, expect) -> str:
    """The element's text once Gradio's progress overlay ("processing | 0.1/0.2s") is gone."""
    expect(element).not_to_have_text(PROGRESS)
    return element.inner_text()


def close_and_confirm(page, url: str, expect) -> None:
    page.goto(url + "organizer")
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round 1 is open", timeout=90_000)
    page.locator("#org-close").click()
    expect(page.locator("#org-confirm-close")).to_contain_text("Close round 1 now?")
    expect(page.locator("#org-status")).to_contain_text("round 1 is open")  # not yet
    page.locator("#org-confirm-close-yes").click()
    expect(page.locator("#org-status")).to_contain_text("round 2 is open")
    results = page.locator("#org-results")
    expect(results).to_contain_text("pref_accuracy", timeout=120_000)  # judged
    expect(results).not_to_contain_text("(judging)", timeout=120_000)
    shoot(page, "organizer-desktop")


def see_the_result(page, size: str, expect) -> None:
    news = page.locator("#round-news")
    expect(news).to_contain_text("Round 1 is over", timeout=120_000)
    expect(news).to_contain_text("won")
    open_tab(page, "Last round")
    expect(page.locator("#last-round")).to_contain_text("won")
    expect(page.locator("#before-after")).to_contain_text("You asked: Hello", timeout=120_000)
    shoot(page, f"after-the-round-{size}")


def the_page_agrees(page, expect) -> None:
    """The banner, the Points tab and the leaderboard say the same points."""
    page.reload()  # and after a reload too
    banner = page.locator("#banner .crowd-points")
    expect(banner).to_be_visible()
    name = page.locator("#banner .crowd-name").inner_text()
    open_tab(page, "Points and leaderboard")
    mine = page.locator("#mine")
    expect(mine).to_contain_text("Your points")
    expect(page.locator("#people")).to_contain_text(name)
    banner_points = float(banner.inner_text())
    tab_points = float(re.search(r"Your points: ([\d.]+)", mine.inner_text())[1])
    board = re.search(rf"{re.escape(name)}\s+([\d.]+)", page.locator("#people").inner_text())
    board_points = float(board[1])
    assert banner_points == tab_points == board_points > 0


def shoot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))  # the viewport: what is on screen
