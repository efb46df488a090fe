"""The Gradio app: the volunteer page at `/`, the organizer page at `/organizer` (not linked
from the volunteer page), and a small API for programmatic volunteers. The only package,
with `app.py`, that imports Gradio."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import gradio as gr

from crowd.config import Settings
from crowd.identity import load_secret
from crowd.organizer import Organizer
from crowd.service import CrowdService
from crowd.ui.api import VolunteerApi
from crowd.ui.components import css
from crowd.ui.http_limits import RequestLimits
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
    secret = load_secret(service.settings.data_dir, service.settings.identity_secret)
    return hashlib.sha256(f"browser-state:{secret}".encode()).hexdigest()[:32]


def build_app(service: CrowdService, organizer: Organizer, oauth: bool | None = None) -> gr.Blocks:
    oauth = oauth_available() if oauth is None else oauth
    ttl = service.settings.upload_ttl_s
    # Uploads and the files handlers return live in Gradio's cache: delete them once they are
    # `ttl` old, checking every tenth of that (Gradio also empties the cache on a clean stop).
    with gr.Blocks(title=TITLE, delete_cache=(max(60, ttl // 10), ttl)) as demo:
        gr.Markdown(f"# {TITLE}: teach a model together", elem_id="title")
        warming_notice(demo, service)
        volunteer_page(demo, service, browser_secret(service), oauth)
        VolunteerApi(service).register()
    with demo.route("Organizer", "/organizer", show_in_navbar=False):
        organizer_page(OrganizerHandlers(organizer), oauth)
    return demo


WARMING = (
    "**The model is warming up.** You can join and look around; a chat sent now is answered "
    "as soon as it is ready (the first start of a server takes about a minute)."
)


def warming_notice(demo: gr.Blocks, service: CrowdService) -> None:
    """A line at the top of the page while the model loads; a timer hides it once it is ready
    and then stops."""

    def check() -> tuple:
        ready = service.generation is None or service.generation.ready
        return gr.update(visible=not ready), gr.Timer(active=not ready)

    notice = gr.Markdown(WARMING, elem_id="warming")
    timer = gr.Timer(3.0)
    for event in (demo.load, timer.tick):
        event(check, None, [notice, timer], show_progress="hidden", api_visibility="private")


def peer_is_the_socket() -> None:
    """Switch off uvicorn's own X-Forwarded-For handling (read when `launch` builds its
    config). By default it believes the header from 127.0.0.1 and ::1 and overwrites the
    request's client with a hop, so a forged header from a local peer would count as another
    address. Our rule (`crowd.network`, with CROWD_TRUSTED_PROXIES) needs the real peer."""
    os.environ["FORWARDED_ALLOW_IPS"] = ""  # trust no one: uvicorn keeps the socket's peer


def launch_options(settings: Settings | None = None) -> dict:
    """Arguments for `Blocks.launch` shared by app.py and the tests: the look, the largest
    upload anyone may send (`/gradio_api/upload` is open to every visitor), and the request
    limits in front of every route (`crowd.ui.http_limits`). Also leaves X-Forwarded-For to
    `crowd.network` alone (`peer_is_the_socket`)."""
    from starlette.middleware import Middleware

    peer_is_the_socket()
    settings = settings or Settings()
    max_file = settings.max_upload_mb * 1024 * 1024
    limits = Middleware(
        RequestLimits,
        max_body=settings.max_request_kb * 1024,
        max_upload=max_file,
        uploads_per_minute=settings.uploads_per_minute,
        trusted=settings.trusted_proxies,
    )
    return {
        "css": css(),
        "theme": gr.themes.Soft(primary_hue="indigo"),
        "max_file_size": max_file,
        "app_kwargs": {"middleware": [limits]},
    }
