"""End to end in a real browser: the real app (`app.py`, its worker included) on the tiny model,
driven by Playwright through Debian's Chromium. A volunteer consents, chats, rewrites a reply in
place and labels an emotion; an organizer closes the round; the volunteer's open page then shows
the winner and their points without a reload. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from loopback import Forwarder, network_address

from crowd.config import load_settings
from crowd.organizer import Organizer
from crowd.service import CrowdService
from tests.apps import KEY

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HAPPY = "I am so happy today, what a wonderful day!"


@contextmanager
def chromium():
    """Debian's Chromium through Playwright, headless; closed when the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_campaign(settings, puppets: int = 0, **changes) -> None:
    """A preference round small enough to train in seconds: one correction suffices, and the
    organizer's reference pair (the rewrite preferred) judges it, so the outcome is stable.
    `puppets` pseudonyms join from one network first, for the organizer's view of source
    groups; `changes`: other campaign settings."""
    service = CrowdService(settings, None)
    for i in range(puppets):
        service.join(f"Puppet {i}", True, address="203.0.113.5")
    organizer = Organizer(service)
    organizer.update_campaign(
        KEY,
        task="preference",
        min_corrections=1,
        heldout_share=0.0,
        training_mode="sft",
        points_rule="paper",
        **changes,
    )
    organizer.add_references(
        KEY,
        [
            {
                "kind": "pair",
                "prompt": [{"role": "user", "content": "Hello"}],
                "chosen": HAPPY,
                "rejected": "Go away.",
            }
        ],
    )


def app_env(settings, port: int, worker: bool) -> dict:
    return {
        **os.environ,
        "CROWD_DATA_DIR": str(settings.data_dir),
        "CROWD_PORT": str(port),
        "CROWD_BASE_MODEL": settings.model.base_model,
        "CROWD_DEVICE": "cpu",
        "CROWD_ORGANIZER_SECRET": KEY,
        # fixed, so that the gold items of review queues fall at the same places in every run
        "CROWD_IDENTITY_SECRET": "browser-tests-identity-secret-fixed-so-runs-repeat",
        "CROWD_MAX_NEW_TOKENS": "12",
        "CROWD_EPOCHS": "3",
        "CROWD_LEARNING_RATE": "0.001",
        "CROWD_EVAL_SAMPLES": "2",
        "CROWD_WORKER": "1" if worker else "0",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


def run_app(settings, tmp_path, env: dict, port: int):
    """The real app in a subprocess until the generator is closed; yields its URL."""
    if not CHROMIUM.exists():
        pytest.skip(
            "no browser: install one with `apt-get install -y chromium` "
            "(Debian's package puts it at /usr/bin/chromium)"
        )
    pytest.importorskip("playwright.sync_api")
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, process, tmp_path / "app.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        if process.returncode not in (0, -15):
            print((tmp_path / "app.log").read_text()[-4000:])


@pytest.fixture
def app_url(settings, tmp_path):
    """The real app in a subprocess, on a free port, with its worker running."""
    settings = replace(settings, organizer_secret=KEY)
    prepare_campaign(settings, puppets=3)
    port = free_port()
    yield from run_app(settings, tmp_path, app_env(settings, port, worker=True), port)


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    # 240 s: on a shared 2-core machine under load the app has taken over 90 s to start
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the app did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_a_volunteer_corrects_an_organizer_closes_and_the_page_shows_the_winner(app_url):
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)  # a shared CI machine can be slow; failures still fail
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 1000})
        context.set_default_timeout(30_000)
        volunteer = context.new_page()
        join_and_correct(volunteer, app_url, expect)
        second = browser.new_context(viewport={"width": 1200, "height": 1000})
        with Forwarder(app_url, network_address(1)) as other_network:  # another voice
            review_as_another_volunteer(second.new_page(), other_network.url, expect)
        close_round_as_organizer(context.new_page(), app_url, expect)
        see_the_result(volunteer, expect)
        for size, options in (("desktop", WIDE), ("phone", PHONE)):
            look_at_who_counts(browser.new_context(**options).new_page(), app_url, size, expect)


def join_and_correct(page, url: str, expect) -> None:
    page.goto(url)
    expect(page.locator("#terms")).to_contain_text("CC BY 4.0")
    page.locator("#name").locator("input, textarea").first.fill("Ada Lovelace")
    page.locator("#consent input").check()
    page.locator("#join").click()
    expect(page.locator("#banner")).to_contain_text("Ada Lovelace in group")
    page.reload()  # the signed identity in the browser brings the same person back
    expect(page.locator("#banner")).to_contain_text("Ada Lovelace in group")

    page.locator("#message textarea").fill("Hello")
    page.locator("#send").click()
    rewrite_the_last_reply(page, HAPPY, expect)
    expect(page.locator("#chat")).to_contain_text(HAPPY)

    page.locator("#emotion input").click()
    page.keyboard.type("joy")
    page.keyboard.press("Enter")
    page.locator("#label").click()
    expect(page.locator("#ack")).to_contain_text("Saved your emotion label")
    expect(page.locator("#banner")).to_contain_text("2 corrections this round")
    page.screenshot(path=str(SHOTS / "volunteer-chat.png"), full_page=True)


def rewrite_the_last_reply(page, text: str, expect) -> None:
    """Wait for the reply, open the editor on it, type `text` and save with Enter."""
    expect(page.locator("#chat .message-buttons-left").last).to_be_visible()  # the reply is in
    page.locator("#rewrite").click()
    box = page.locator("#editor-text textarea")
    expect(box).to_be_visible()
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#ack")).to_contain_text("Saved your rewrite")


def review_as_another_volunteer(page, url: str, expect) -> None:
    """A second person, on another network, endorses what the Review tab deals them: the
    first one's rewrite and label, in the order dealt (a gold item may come between)."""
    page.goto(url)
    page.locator("#name").locator("input, textarea").first.fill("Bob Reviewer")
    page.locator("#consent input").check()
    page.locator("#join").click()
    expect(page.locator("#banner")).to_contain_text("Bob Reviewer in group")
    page.get_by_role("tab", name="Review").click()
    item = page.locator("#review-item")
    expect(item).to_contain_text("They asked")  # an item is dealt (which one first is the server's)
    page.screenshot(path=str(SHOTS / "volunteer-review.png"), full_page=True)
    seen = []  # the first one's two corrections, and any gold items dealt unmarked among them
    while "Nothing to review" not in (shown := item.inner_text()) and len(seen) < 8:
        seen.append(shown)
        bad = "Their rewrite: Go away." in shown  # the reference pair's bad gold item
        page.locator("#review-reject" if bad else "#review-endorse").click()
        deadline = time.monotonic() + 30  # the next item replaces this one
        while item.inner_text() == shown and time.monotonic() < deadline:
            time.sleep(0.2)
    expect(item).to_contain_text("Nothing to review")
    assert any("Their rewrite" in text and HAPPY in text for text in seen), seen
    assert any("They labelled its emotion: joy" in text for text in seen), seen


def close_round_as_organizer(page, url: str, expect) -> None:
    page.goto(url + "organizer")
    page.locator("#org-key input").fill("not the key")
    page.locator("#org-unlock").click()
    # Wait for the refusal itself (not just a hidden panel, which is true before any answer),
    # so the right key is not queued behind a wrong one still on its way on a busy machine.
    expect(page.get_by_text("That is not the organizer key.")).to_be_visible(timeout=90_000)
    expect(page.locator("#org-panel")).to_be_hidden()
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round 1 is open", timeout=90_000)
    page.locator("#org-close").click()  # asks first
    expect(page.locator("#org-confirm-close")).to_contain_text("Close round 1 now?")
    page.locator("#org-confirm-close-yes").click()
    expect(page.locator("#org-status")).to_contain_text("round 2 is open")
    expect(page.locator("#org-jobs")).to_contain_text("finished", timeout=90_000)
    expect(page.locator("#org-runner")).to_contain_text("CROWD_ROUND_RUNNER=thread")
    expect(page.locator("#org-runner")).to_contain_text("finished; its thread runner says")
    page.screenshot(path=str(SHOTS / "organizer.png"), full_page=True)
    page.get_by_role("tab", name="Campaign settings").click()
    # The campaign's review settings, as the organizer finds them: the defaults.
    expect(page.locator("#org-reviews-on input")).to_be_checked()
    expect(page.locator("#org-min-reviews input")).to_have_value("2")
    page.screenshot(path=str(SHOTS / "organizer-settings.png"), full_page=True)
    export_the_model(page, expect)


WIDE = {"viewport": {"width": 1400, "height": 900}}


def look_at_who_counts(page, url: str, size: str, expect) -> None:
    """The organizer's sections about voices (issue 26): who may contribute, gold items, and
    the rings in Data quality, where the three pseudonyms of one network are one source group."""
    page.goto(url + "organizer")
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round 2", timeout=90_000)
    open_tab(page, "Campaign settings")
    expect(page.locator("#org-contributors")).to_contain_text("Requiring a Hugging Face sign-in")
    page.locator("#org-contributors").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"organizer-contributors-{size}.png"))
    open_tab(page, "Moderation")
    expect(page.locator("#org-gold-help")).to_be_visible()
    page.screenshot(path=str(SHOTS / f"organizer-moderation-{size}.png"), full_page=True)
    open_tab(page, "Data quality")
    page.locator("#org-quality").click()
    expect(page.locator("#org-sources")).to_contain_text("net:203.0.113.0/24")
    page.screenshot(path=str(SHOTS / f"organizer-quality-{size}.png"), full_page=True)


def export_the_model(page, expect) -> None:
    """The crowned adapter as a zip, from the organizer page's Export tab."""
    page.get_by_role("tab", name="Export").click()
    page.locator("#org-export-model").click()
    expect(page.locator("#org-model-file")).to_contain_text("crowd-model")  # the name, then .zip


def see_the_result(page, expect) -> None:
    page.bring_to_front()
    expect(page.locator("#banner")).to_contain_text("Round 2")
    expect(page.locator("#banner .crowd-points")).not_to_have_text("0", timeout=20_000)
    page.get_by_role("tab", name="Last round").click()
    expect(page.locator("#last-round")).to_contain_text("won")
    page.screenshot(path=str(SHOTS / "volunteer-last-round.png"), full_page=True)
    page.get_by_role("tab", name="Points and leaderboard").click()
    expect(page.locator("#people")).to_contain_text("Ada Lovelace")
    expect(page.locator("#ledger")).to_contain_text("1")
    page.screenshot(path=str(SHOTS / "volunteer-points.png"), full_page=True)


# -- the volunteer's journey (issue 16), at desktop and phone sizes ----------------------------

DESKTOP = {"viewport": {"width": 1200, "height": 1000}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture
def journey_app(settings, tmp_path):
    """The real app without its worker (the test runs the round's job itself, so the page can
    be seen while the round waits and after it ends), started with Gradio's own port setting."""
    settings = replace(settings, organizer_secret=KEY)
    prepare_campaign(settings)
    port = free_port()
    env = app_env(settings, port, worker=False)
    env["GRADIO_SERVER_PORT"] = env.pop("CROWD_PORT")  # Gradio's name works when CROWD_'s is unset
    for url in run_app(settings, tmp_path, env, port):
        yield url, load_settings(env)


def test_the_volunteer_journey_at_desktop_and_phone_sizes(journey_app):
    from playwright.sync_api import expect

    from crowd.campaigns import utcnow
    from crowd.rounds.engine import build_engine
    from crowd.rounds.worker import Worker

    url, settings = journey_app
    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)
    with chromium() as browser:
        pages = {"desktop": browser.new_context(**DESKTOP).new_page()}
        pages["phone"] = browser.new_context(**PHONE).new_page()
        first_visit(pages["desktop"], url, "Ada Lovelace", "desktop", expect)
        first_visit(pages["phone"], url, "Pat Phone", "phone", expect)
        Organizer(CrowdService(settings, None)).close_round(KEY)
        for size, page in pages.items():
            expect(page.locator("#round-news")).to_contain_text("being trained and judged")
            expect(page.locator("#round-news")).to_contain_text("0 of 3 groups trained")
            shoot(page, f"journey-progress-{size}")
        assert Worker(settings.db_path, lambda: build_engine(settings, utcnow), utcnow).step()
        for size, page in pages.items():
            see_the_round_end(page, size, expect)


def first_visit(page, url: str, name: str, size: str, expect) -> None:
    """Join; the how-to is folded under one line and opens on a click; chat with Enter;
    rewrite the reply; pick an emotion label and read its definition."""
    page.goto(url)
    page.locator("#name").locator("input, textarea").first.fill(name)
    page.locator("#consent input").check()
    page.locator("#join").click()
    expect(page.locator("#banner")).to_contain_text(name)  # the page has settled
    howto = page.locator("#howto")
    expect(howto).to_contain_text("How to take part")
    expect(page.locator("#howto-text")).to_be_hidden()  # folded: the chat stays on screen
    fold = page.get_by_role("button", name="How to take part (new here? start here)")
    fold.click()
    expect(howto).to_contain_text("A good rewrite")
    no_sideways_scroll(page)
    shoot(page, f"journey-howto-{size}")
    fold.click()
    expect(page.locator("#howto-text")).to_be_hidden()

    page.locator("#message textarea").fill("Hello")
    page.locator("#message textarea").press("Enter")  # the keyboard alone sends
    rewrite_the_last_reply(page, HAPPY, expect)
    page.locator("#emotion input").click()
    page.keyboard.type("joy")
    page.keyboard.press("Enter")
    expect(page.locator("#emotion-definition")).to_contain_text("joy: a feeling of pleasure")
    for name_ in (
        "Send",
        "Rewrite the last reply",
        "Label it",
        "Another reply",
        "Undo",
        "New conversation",
    ):
        expect(page.get_by_role("button", name=name_, exact=True)).to_be_visible()
    no_sideways_scroll(page)
    shoot(page, f"journey-label-{size}")


def see_the_round_end(page, size: str, expect) -> None:
    news = page.locator("#round-news")
    expect(news).to_contain_text("Round 1 is over", timeout=20_000)
    expect(news).to_contain_text("won")
    shoot(page, f"journey-notice-{size}")
    open_tab(page, "Last round")
    cards = page.locator("#before-after")
    expect(cards).to_contain_text("your prompts, before and after")
    expect(cards).to_contain_text("You asked: Hello")
    expect(cards).to_contain_text("After (new champion)")
    no_sideways_scroll(page)
    shoot(page, f"journey-before-after-{size}")


def open_tab(page, name: str) -> None:
    """Click a tab; on a phone Gradio moves the tabs that do not fit behind its "…" menu."""
    tab = page.get_by_role("tab", name=name)
    menu = page.locator(".overflow-menu button").first
    tab.or_(menu).first.wait_for(state="visible")  # the tabs are drawn, in full or behind "…"
    if not tab.is_visible():
        menu.click()
        tab = page.locator(".overflow-dropdown").get_by_role("button", name=name)
    tab.click()


def no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width} px wide"


def shoot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def hf_jobs_app(settings, tmp_path):
    """The real app with its worker, set to send rounds to Hugging Face Jobs, without a token."""
    settings = replace(settings, organizer_secret=KEY)
    prepare_campaign(settings)
    port = free_port()
    env = app_env(settings, port, worker=True)
    for name in ("HF_TOKEN", "CROWD_HF_TOKEN"):
        env.pop(name, None)
    env.update(
        CROWD_ROUND_RUNNER="hf-jobs",
        CROWD_JOB_FLAVOR="l4x1",
        CROWD_JOB_BUCKET="organizer/crowd-sft-replica",
        CROWD_JOB_DIR=str(tmp_path / "bucket"),
        CROWD_JOB_IMAGE="hf.co/spaces/organizer/crowd-sft",
    )
    yield from run_app(settings, tmp_path, env, port)


def test_the_organizer_sees_where_rounds_train_and_why_a_job_failed(hf_jobs_app):
    """hf-jobs without a token: the round's job fails before anything is rented, and the
    organizer page says so beside the runner and its price, at desktop and phone sizes."""
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)
    with chromium() as browser:
        sizes = {"desktop": {"viewport": {"width": 1400, "height": 900}}, "phone": PHONE}
        for size, options in sizes.items():
            page = browser.new_context(**options).new_page()
            page.goto(hf_jobs_app + "organizer")
            page.locator("#org-key input").fill(KEY)
            page.locator("#org-unlock").click()
            expect(page.locator("#org-status")).to_contain_text("is open", timeout=90_000)
            if size == "desktop":
                page.locator("#org-close").click()  # asks first
                page.locator("#org-confirm-close-yes").click()
            runner = page.locator("#org-runner")
            expect(runner).to_contain_text("on Hugging Face Jobs", timeout=60_000)
            expect(runner).to_contain_text("l4x1")
            expect(runner).to_contain_text("$0.80 an hour, billed by the minute")
            expect(runner).to_contain_text("needs a Hugging Face token", timeout=90_000)
            expect(runner).to_contain_text("failed")
            page.locator("#org-runner").scroll_into_view_if_needed()
            shoot(page, f"organizer-runner-{size}")


# -- the organizer's candidate settings and round notes (issue 28), desktop and phone -------


def test_the_organizer_sets_the_candidates_and_reads_the_rounds_notes(app_url):
    """The settings tab shows the candidate settings at their defaults; a saved memory window
    comes back as saved; a closed round's notes (the window is longer than the campaign) are
    under the jobs table, as the round stores them, at desktop and phone sizes."""
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        unlock(page, app_url, expect)
        open_tab(page, "Campaign settings")
        expect(page.locator("#org-union-candidate input")).to_be_checked()  # on by default
        expect(page.locator("#org-memory-rounds input")).to_have_value("3")
        page.locator("#org-union-candidate input").check()
        page.locator("#org-union-continues input").check()
        page.locator("#org-memory-rounds input").fill("7")
        page.locator("#org-save").click()
        expect(page.get_by_text("Campaign settings saved.")).to_be_visible()
        shoot(page, "organizer-candidates-desktop")
        open_tab(page, "Rounds and jobs")
        page.locator("#org-close").click()  # asks first
        page.locator("#org-confirm-close-yes").click()
        expect(page.locator("#org-jobs")).to_contain_text("finished", timeout=180_000)
        expect(page.locator("#org-notes")).to_contain_text("The memory window is 7 earlier rounds")
        shoot(page, "organizer-notes-desktop")
        phone = browser.new_context(**PHONE).new_page()
        unlock(phone, app_url, expect)
        expect(phone.locator("#org-notes")).to_contain_text("memory window", timeout=20_000)
        no_sideways_scroll(phone)
        shoot(phone, "organizer-notes-phone")
        open_tab(phone, "Campaign settings")
        expect(phone.locator("#org-memory-rounds input")).to_have_value("7")
        shoot(phone, "organizer-candidates-phone")


def unlock(page, url: str, expect) -> None:
    page.goto(url + "organizer")
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round", timeout=90_000)
