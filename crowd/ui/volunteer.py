"""The volunteer page: terms and join, then chat and corrections, points, and the last round.
Layout and wiring only; the handlers live in `chat.py` and `session.py`."""

from __future__ import annotations

import gradio as gr

from crowd.review import Reviews
from crowd.service import CrowdService
from crowd.ui import review as ui_review
from crowd.ui.chat import ChatHandlers, ChatTab
from crowd.ui.components import terms
from crowd.ui.journey import (
    JourneyHandlers,
    definition_of,
    emotion_choices,
    howto_dismissed,
    howto_panel,
    wire_howto,
)
from crowd.ui.session import SessionHandlers

TICK_S = 4.0  # how often an open page polls for a new round, points and results
IDENTITY_KEY = "crowd-sft-identity"  # the browser's localStorage key for the signed token

HELP = (
    "Under each reply: the **pencil** rewrites it in place (your version teaches the "
    "model), the **thumbs** rate it. Below: label the last reply's emotion, or ask for "
    "another reply and pick the better one."
)


def volunteer_page(
    demo: gr.Blocks, service: CrowdService, browser_secret: str, oauth: bool
) -> None:
    """Build the page inside `demo` and wire its events."""
    session, chat = SessionHandlers(service, oauth), ChatHandlers(service)
    token = gr.BrowserState(None, storage_key=IDENTITY_KEY, secret=browser_secret)
    tab, stamp, round_now = gr.State(ChatTab()), gr.State(None), gr.State(None)
    dismissed = howto_dismissed()
    seen = gr.State("unseen")  # the before/after cards last shown (journey.news)

    join_screen, name, consent, join = _join_screen(service, oauth)
    with gr.Column(visible=False, elem_id="main-screen") as main_screen:
        banner = gr.HTML(elem_id="banner")
        howto = howto_panel(service, dismissed)
        news = gr.Markdown(visible=False, elem_id="round-news")
        with gr.Tabs():
            with gr.Tab("Chat and correct", id="chat-tab"):
                c = _chat_tab()
            with gr.Tab("Review", id="review-tab") as review_tab:
                r = ui_review.review_tab()
            with gr.Tab("Points and leaderboard", id="points-tab"):
                boards = _points_tab()
            with gr.Tab("Last round", id="round-tab"):
                boards += _round_tab()
                cards = gr.HTML(elem_id="before-after")  # filled by journey.news, not tick
        leave = gr.Button(
            "Not you? Forget me in this browser", size="sm", variant="secondary", elem_id="leave"
        )
    timer = gr.Timer(TICK_S)

    screens = [join_screen, main_screen]
    tick = dict(
        fn=session.tick,
        inputs=[token, stamp],
        outputs=[banner, round_now, stamp, *boards],
        show_progress="hidden",
        api_visibility="private",
    )
    round_now.change(
        session.new_round,
        [tab, round_now],
        [c["chatbot"], tab],
        show_progress="hidden",
        api_visibility="private",
    )
    gate = dict(
        fn=session.sign_in_gate,
        inputs=[token],
        outputs=[c["sign_in"], c["label"]],
        show_progress="hidden",
        api_visibility="private",
    )
    demo.load(session.enter, [token], [token, tab, *screens, name], api_visibility="private").then(
        **tick
    ).then(**gate)
    join.click(session.join, [name, consent], [token, tab, *screens], api_name="join").then(
        **tick
    ).then(**gate)
    timer.tick(**tick)  # type: ignore[arg-type]
    news_tick = dict(
        fn=JourneyHandlers(service).news,
        inputs=[token, seen],
        outputs=[news, cards, seen],
        show_progress="hidden",
        api_visibility="private",
    )
    demo.load(**news_tick)  # type: ignore[arg-type]
    timer.tick(**news_tick)  # type: ignore[arg-type]
    leave.click(session.leave, None, [token, tab, c["chatbot"], *screens], api_visibility="private")
    _wire_chat(chat, token, tab, c, tick)
    wire_howto(demo, howto)
    handlers = ui_review.ReviewHandlers(Reviews(service), service.settings.trusted_proxies)
    ui_review.wire_review(handlers, token, r, review_tab.select)


def _join_screen(service: CrowdService, oauth: bool) -> tuple:
    """The terms (with the campaign's licence, read at each page load) and the join form."""
    with gr.Column(visible=True, elem_id="join-screen") as screen:
        gr.Markdown(lambda: terms(*_licence_and_name(service)), elem_id="terms")
        if oauth:
            gr.LoginButton()
        name = gr.Textbox(
            label="Display name (shown on the leaderboard)",
            max_length=32,
            placeholder="2-32 letters, digits, spaces or . ' - _",
            elem_id="name",
        )
        consent = gr.Checkbox(
            label="I have read the terms above and agree to them", elem_id="consent"
        )
        join = gr.Button("Join", variant="primary", elem_id="join")
    return screen, name, consent, join


def _licence_and_name(service: CrowdService) -> tuple[str, str]:
    campaign, _ = service.context()
    return campaign["licence"], campaign["name"]


def _chat_tab() -> dict:
    c: dict = {}
    c["sign_in"] = gr.Markdown(visible=False, elem_id="sign-in-notice")  # see sign_in_gate
    c["chatbot"] = gr.Chatbot(
        elem_id="chat",
        editable="all",
        render_markdown=False,
        group_consecutive_messages=False,
        height=430,
        show_label=False,
        buttons=["copy"],
        placeholder="Say hello to your group's model. Then make its replies better.",
    )
    with gr.Row(equal_height=True):
        c["message"] = gr.Textbox(  # type: ignore[assignment]
            show_label=False,
            placeholder="Write to your group's model…",
            max_lines=6,
            scale=6,
            elem_id="message",
            max_length=2000,
        )
        c["send"] = gr.Button("Send", variant="primary", scale=1, elem_id="send")  # type: ignore[assignment]
    gr.Markdown(HELP, elem_classes=["crowd-help"])
    with gr.Row(elem_id="actions"):
        c["emotion"] = gr.Dropdown(  # type: ignore[assignment]
            emotion_choices(),  # each label with its one-line definition
            value=None,
            label="Emotion of the last reply",
            scale=3,
            elem_id="emotion",
        )
        c["label"] = gr.Button("Label it", scale=1, elem_id="label")  # type: ignore[assignment]
        c["another"] = gr.Button("Another reply", scale=1, elem_id="another")  # type: ignore[assignment]
        c["new"] = gr.Button("New conversation", scale=1, variant="secondary", elem_id="new")  # type: ignore[assignment]
    c["definition"] = gr.Markdown(elem_id="emotion-definition")
    with gr.Row(visible=False, elem_id="choice-row", equal_height=True) as c["choice_row"]:
        gr.Markdown("**Which is better: the first reply (A) or the second (B)?**")
        for choice, text in (("a", "A"), ("b", "B"), ("tie", "Tie"), ("both_bad", "Both bad")):
            c[f"choose_{choice}"] = gr.Button(text, size="sm", elem_id=f"choose-{choice}")  # type: ignore[assignment]
    with gr.Row(equal_height=True, elem_id="ack-row"):
        c["ack"] = gr.Markdown(elem_id="ack")  # type: ignore[assignment]
        c["undo"] = gr.Button("Undo", size="sm", variant="secondary", scale=0, elem_id="undo")  # type: ignore[assignment]
    return c


def _points_tab() -> list:
    mine = gr.Markdown(elem_id="mine")
    ledger = gr.Dataframe(
        headers=["round", "group", "points", "why"],
        interactive=False,
        show_label=False,
        elem_id="ledger",
    )
    with gr.Row():
        people = gr.Dataframe(
            headers=["rank", "name", "points", "rounds"],
            interactive=False,
            label="People",
            elem_id="people",
            scale=3,
        )
        groups = gr.Dataframe(
            headers=["group", "wins"], interactive=False, label="Groups", elem_id="groups", scale=2
        )
    return [mine, ledger, people, groups]


def _round_tab() -> list:
    last = gr.Markdown(elem_id="last-round")
    chart = gr.Plot(show_label=False, elem_id="chart", format="png")
    samples = gr.Dataframe(
        headers=["before (champion)", "after (winner)"],
        interactive=False,
        label="Sample replies, before and after",
        wrap=True,
        column_widths=["50%", "50%"],
        elem_id="samples",
        visible=False,
    )
    return [last, chart, samples]


def _wire_chat(chat: ChatHandlers, token, tab, c: dict, tick: dict) -> None:
    chatbot, ack_md = c["chatbot"], c["ack"]
    send = dict(
        fn=chat.send,
        inputs=[token, tab, c["message"], chatbot],
        outputs=[chatbot, tab, c["message"]],
    )
    c["message"].submit(**send, api_visibility="private")
    c["send"].click(**send, api_name="send")
    chatbot.edit(
        chat.edit, [token, tab, chatbot], [chatbot, tab, ack_md], api_visibility="private"
    ).then(**tick)
    chatbot.like(chat.like, [token, tab], [tab, ack_md], api_visibility="private").then(**tick)
    c["label"].click(chat.label, [token, tab, c["emotion"]], [tab, ack_md], api_name="label").then(
        **tick
    )
    c["another"].click(
        chat.another, [token, tab, chatbot], [chatbot, tab, c["choice_row"]], api_name="another"
    )
    for choice in ("a", "b", "tie", "both_bad"):
        c[f"choose_{choice}"].click(
            chat.chooser(choice),
            [token, tab],
            [tab, ack_md, c["choice_row"]],
            api_name=f"choose_{choice}",
        ).then(**tick)
    c["undo"].click(chat.undo, [token, tab, chatbot], [chatbot, tab, ack_md], api_name="undo").then(
        **tick
    )
    c["emotion"].change(
        definition_of,
        [c["emotion"]],
        [c["definition"]],
        show_progress="hidden",
        api_visibility="private",
    )
    c["new"].click(chat.new_conversation, [tab], [chatbot, tab], api_visibility="private")
    chatbot.clear(chat.new_conversation, [tab], [chatbot, tab], api_visibility="private")
