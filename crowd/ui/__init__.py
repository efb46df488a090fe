"""The Gradio app: the volunteer page at `/`, the organizer page at `/organizer` (not linked
from the volunteer page), and a small API for programmatic volunteers. The only package,
with `app.py`, that imports Gradio."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import gradio as gr

from crowd.identity import load_secret
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui.api import VolunteerApi
from crowd.ui.components import css
from crowd.ui.organizer import OrganizerHandlers
from crowd.ui.organizer_page import organizer_page
from crowd.ui.volunteer import volunteer_page

TITLE = "Crowd-SFT"


def oauth_available() -> bool:
    """Hugging Face login works on a Space with `hf_oauth: true` (Gradio reads SPACE_ID and
    OAUTH_CLIENT_ID) and with Gradio's oauth extra (authlib) installed. Elsewhere the page
    offers anonymous identities only, rather than Gradio's local login mock."""
    from gradio import oauth, utils

    return (
        utils.get_space() is not None
        and oauth.OAUTH_CLIENT_ID is not None
        and importlib.util.find_spec("authlib") is not None
    )


def browser_secret(service: CrowdService) -> str:
    """A stable key for the browser-side encryption of the stored token, derived one-way from
    the identity secret, so stored identities survive a server restart. Gradio sends it to the
    page: it is not a secret, and the token it wraps is signed on the server anyway."""
    secret = load_secret(service.settings.data_dir)
    return hashlib.sha256(f"browser-state:{secret}".encode()).hexdigest()[:32]


def build_app(service: CrowdService, organizer: Organizer, oauth: bool | None = None) -> gr.Blocks:
    oauth = oauth_available() if oauth is None else oauth
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}: teach a model together", elem_id="title")
        volunteer_page(demo, service, browser_secret(service), oauth)
        VolunteerApi(service).register()
    with demo.route("Organizer", "/organizer", show_in_navbar=False):
        organizer_page(OrganizerHandlers(organizer), oauth)
    return demo


def peer_is_the_socket() -> None:
    """Switch off uvicorn's own X-Forwarded-For handling (read when `launch` builds its
    config). By default it believes the header from 127.0.0.1 and ::1 and overwrites the
    request's client with a hop, so a forged header from a local peer would count as another
    address. Our rule (`crowd.network`, with CROWD_TRUSTED_PROXIES) needs the real peer."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""  # trust no one: uvicorn keeps the socket's peer


def launch_options() -> dict:
    """Arguments for `Blocks.launch` shared by app.py and the tests. Also leaves
    X-Forwarded-For to `crowd.network` alone (`peer_is_the_socket`)."""
    peer_is_the_socket()
    return {"css": css(), "theme": gr.themes.Soft(primary_hue="indigo")}
