"""Volunteer text is inert wherever it is shown, in a real browser: a rewrite and a message
holding Markdown (an image, a link, a bare URL, emphasis) and harmless HTML are shown as typed,
line breaks kept, in the Review tab, the chat and the organizer's table, and the browser never
requests anything from the local server the image and links point at."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apps import KEY, App, volunteer
from loopback import Forwarder, network_address
from test_browser import ARGS, CHROMIUM, SHOTS

from crowd.ui.components import inert

pytestmark = pytest.mark.browser


class Trap(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        Trap.seen.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def trap():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Trap)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Trap.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def payload(trap: str, what: str) -> str:
    return (
        f"{what} ![pixel]({trap}/markdown-image.png) and [a link]({trap}/link)\n"
        f"second line: {trap}/bare-url <b>bold?</b> **strong** x<y and y>z"
    )


def test_markdown_and_html_from_volunteers_stay_text_everywhere(trap, tmp_path, tiny_model_dir):
    if not CHROMIUM.exists():
        pytest.skip("no browser at /usr/bin/chromium")
    from playwright.sync_api import expect, sync_playwright

    rewrite = payload(trap, "Rewrite")
    (tmp_path / "replica").mkdir()
    app = App(tmp_path, str(tiny_model_dir), str(tmp_path / "replica"))
    try:
        url = app.start()
        client, token, _, message_id = volunteer(url, "Ada")
        client.predict(token, message_id, rewrite, api_name="/api_rewrite")
        SHOTS.mkdir(parents=True, exist_ok=True)
        expect.set_options(timeout=30_000)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            try:
                for n, (size, viewport) in enumerate(
                    (("desktop", (1400, 900)), ("phone", (390, 844))), start=1
                ):
                    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                    # a reviewer is another voice than the author: another network
                    with Forwarder(url, network_address(n)) as elsewhere:
                        review_and_chat(page, elsewhere.url, trap, rewrite, size, expect)
                organizer_table(
                    browser.new_page(viewport={"width": 1400, "height": 900}), url, rewrite, expect
                )
                for size, viewport in (("desktop", (1400, 900)), ("phone", (390, 844))):
                    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
                    replication_tab(page, url, size, expect)
            finally:
                browser.close()
    finally:
        app.kill()
    assert Trap.seen == [], f"the browser fetched {Trap.seen}"


def review_and_chat(page, url: str, trap: str, rewrite: str, size: str, expect) -> None:
    page.goto(url)
    page.locator("#name").locator("input, textarea").first.fill(f"Bob {size}")
    page.locator("#consent input").check()
    page.locator("#join").click()
    expect(page.locator("#banner")).to_contain_text("in group", timeout=90_000)
    message = payload(trap, "Message")
    page.locator("#message textarea").fill(message)
    page.locator("#send").click()
    chat = page.locator("#chat")
    expect(chat).to_contain_text("![pixel]")
    for line in message.splitlines():
        expect(chat).to_contain_text(line)
    page.get_by_role("tab", name="Review").click()
    item = page.locator("#review-item")
    expect(item).to_contain_text("Their rewrite")
    first, second = rewrite.splitlines()  # as typed, the line break kept
    assert f"Their rewrite: {first}\n{second}" in item.inner_text(), item.inner_text()
    for where in (item, chat):
        assert where.locator("img, a[href]").count() == 0
    page.screenshot(path=str(SHOTS / f"inert-review-{size}.png"), full_page=True)


def organizer_table(page, url: str, rewrite: str, expect) -> None:
    page.goto(url + "organizer")
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round 1 is open", timeout=90_000)
    page.get_by_role("tab", name="Moderation").click()
    page.locator("#org-refresh").click()
    table = page.locator("#org-corrections")
    expect(table).to_contain_text("![pixel]")
    first_line = rewrite.splitlines()[0]
    expect(table).to_contain_text(first_line[:60])
    assert table.locator("img, a[href]").count() == 0
    page.screenshot(path=str(SHOTS / "inert-organizer.png"), full_page=True)


def replication_tab(page, url: str, size: str, expect) -> None:
    """The organizer's Replication tab on a live folder replica: healthy, with its facts."""
    page.goto(url + "organizer")
    page.locator("#org-key input").fill(KEY)
    page.locator("#org-unlock").click()
    expect(page.locator("#org-status")).to_contain_text("round 1 is open", timeout=90_000)
    if size == "phone":  # the tabs overflow into a menu there: the unlocked page is shown
        page.screenshot(path=str(SHOTS / f"organizer-{size}.png"), full_page=True)
        return
    page.get_by_role("tab", name="Replication").click()
    page.locator("#org-replication-refresh").click()
    health = page.locator("#org-replication")
    expect(health).to_contain_text("Healthy")
    expect(health).to_contain_text("Last successful sync")
    page.screenshot(path=str(SHOTS / f"organizer-replication-{size}.png"), full_page=True)


def test_inert_shows_every_character_and_parses_none():
    text = "![x](http://a/b.png) <b>**x**</b>\nwww.a.b a@b.c `c` # h\n1. item | t |"
    shown = inert(text)
    assert "<" not in shown.replace("<br>", "") and ">" not in shown.replace("<br>", "")
    assert shown.count("<br>") == 2
    import html

    assert html.unescape(shown.replace("<br>", "\n")) == text


def test_no_table_renders_markup_and_the_chat_shows_what_was_typed(settings, db_path):
    """Tables show their cells as text (datatype str or number, never markdown or html), so a
    volunteer's text goes in unchanged; the chat renders HTML, so its rows go through inert,
    and what a browser displays of a row (its character references resolved) is the text as
    typed."""
    import html

    import gradio as gr

    from crowd.organizer import Organizer
    from crowd.service import CrowdService
    from crowd.ui import build_app
    from crowd.ui.chat import bot_row

    service = CrowdService(settings, None)
    demo = build_app(service, Organizer(service), oauth=False)
    tables = [b for b in demo.blocks.values() if isinstance(b, gr.Dataframe)]
    assert len(tables) >= 6
    for table in tables:
        kinds = [table.datatype] if isinstance(table.datatype, str) else table.datatype
        assert set(kinds) <= {"str", "number"}, (table.elem_id, kinds)
    for typed in ("<img src=x>", "x<y and y>z", "AT&T &amp; &copy 2020", "two\nlines"):
        shown = bot_row(typed)["content"]
        assert "<img" not in shown and html.unescape(shown) == typed


@pytest.mark.parametrize(
    "text",
    [
        "x<y and y>z",
        "I <3 this, a <- b",
        "a <b>bold</b> move",
        "👨\u200d👩\u200d👧 a family, 🏳️\u200d🌈",
        "می\u200cخواهم",  # Persian: the non-joiner is part of the spelling
        "क्\u200dष",
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland",
        "My data: 5 rows; see ![chart](notes)",
    ],
)
def test_the_text_filter_lets_joiners_and_plain_brackets_through(text):
    from crowd.limits import clean_text

    assert clean_text(text, "rewrite", 4000) == text


@pytest.mark.parametrize(
    "text, why",
    [
        ("<script>alert(1)</script>", "active HTML"),
        ("<img src=http://x/y.png>", "active HTML"),
        ('<a href="javascript:alert(1)">x</a>', "active HTML"),
        ("<b onmouseover=alert(1)>x</b>", "active HTML"),
        ("<iframe src=x>", "active HTML"),
        ("\u202eevil", "U\\+202E"),  # a bidi override disguises text
        ("\u200d alone", "U\\+200D"),
        ("end\u200d", "U\\+200D"),
        ("nul\x00", "U\\+0000"),
        ("\ufeffbom", "U\\+FEFF"),
    ],
)
def test_the_text_filter_still_refuses_active_markup_and_stray_controls(text, why):
    from crowd.limits import Refused, clean_text

    with pytest.raises(Refused, match=why):
        clean_text(text, "rewrite", 4000)
