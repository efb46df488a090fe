"""A small HTTP API for programmatic volunteers (scripts, simulated crowds, the load benchmark),
callable with `gradio_client`. The same service, checks and rate limits as the page; a refusal
comes back as an error carrying the service's message.

    token = client.predict("Ada", True, api_name="/api_join")
    reply = client.predict(token, None, "Hi!", api_name="/api_chat")
    # reply = {"conversation_id": ..., "message_id": ..., "text": ...}
    correction_id = client.predict(token, reply["message_id"], "Better.",
                                   api_name="/api_rewrite")
    items = client.predict(token, api_name="/api_review_queue")  # dealt by the server
    client.predict(token, items[0]["item_id"], "endorse", api_name="/api_review")
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from crowd.limits import Refused, as_id
from crowd.review import Reviews
from crowd.service import CrowdService
from crowd.ui.components import address_of


class VolunteerApi:
    def __init__(self, service: CrowdService):
        self.service = service
        self.reviews = Reviews(service)
        self.proxies = service.settings.trusted_proxies  # whose X-Forwarded-For counts

    def api_join(self, display_name: str, consent: bool, request: gr.Request | None = None) -> str:
        """Join (consent required); returns the signed token to pass to every other call."""
        return self._call(
            lambda: (
                self.service.join(
                    display_name, consent is True, address=address_of(request, self.proxies)
                ).token
            )
        )

    def api_chat(
        self, token: str, conversation_id: int | None, text: str, request: gr.Request | None = None
    ) -> dict:
        """Send a message; returns the stored reply (conversation_id, message_id, text)."""

        def run() -> dict:
            address = address_of(request, self.proxies)
            conversation = optional_id(conversation_id, "conversation")
            # the service's last step is the stored reply (or it refuses)
            *_, last = self.service.send(token, conversation, text, address)
            return {
                "conversation_id": last.conversation_id,
                "message_id": last.message_id,
                "text": last.text,
            }

        return self._call(run)

    def api_chat_stream(
        self, token: str, conversation_id: int | None, text: str, request: gr.Request | None = None
    ) -> Iterator[dict]:
        """Send a message; yields the reply as it grows (message_id None), then the stored
        reply (with its message_id). What a volunteer's page sees, for timing the first token."""
        try:
            for step in self.service.send(
                token,
                optional_id(conversation_id, "conversation"),
                text,
                address_of(request, self.proxies),
            ):
                yield {
                    "conversation_id": step.conversation_id,
                    "message_id": step.message_id,
                    "text": step.text,
                }
        except Refused as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def api_rewrite(
        self, token: str, message_id: int, text: str, request: gr.Request | None = None
    ) -> int:
        """Rewrite a reply; returns the correction id."""
        return self._call(
            lambda: self.service.rewrite(
                token, as_id(message_id, "message"), text, address_of(request, self.proxies)
            )
        )

    def api_rate(
        self, token: str, message_id: int, value: int, request: gr.Request | None = None
    ) -> int:
        """Thumbs up (1) or down (-1); returns the correction id."""
        return self._call(
            lambda: self.service.rate_reply(
                token, as_id(message_id, "message"), value, address_of(request, self.proxies)
            )
        )

    def api_label(
        self, token: str, message_id: int, emotion: str, request: gr.Request | None = None
    ) -> int:
        """Label a reply with one of the 28 emotions; returns the correction id."""
        return self._call(
            lambda: self.service.label(
                token, as_id(message_id, "message"), emotion, address_of(request, self.proxies)
            )
        )

    def api_undo(self, token: str, correction_id: int) -> bool:
        """Withdraw one's own correction within the undo window."""

        def run() -> bool:
            self.service.undo(token, as_id(correction_id, "correction"))
            return True

        return self._call(run)

    def api_review_queue(self, token: str, request: gr.Request | None = None) -> list[dict]:
        """Items the server deals the caller to review (never their own voice's): item_id,
        kind, prompt, original, rewrite / other_reply and choice / emotion, and how many
        reviews each has. Items dealt earlier and not yet answered come first."""
        address = address_of(request, self.proxies)
        return self._call(lambda: self.reviews.queue(token, address=address))

    def api_review(
        self, token: str, item_id: int, verdict: str, request: gr.Request | None = None
    ) -> int:
        """Endorse or reject an item dealt to the caller ('endorse' / 'reject'); returns the
        item id. Refused for an item not dealt to them, one reviewed already, or one another
        pseudonym of their network has reviewed."""
        address = address_of(request, self.proxies)
        return self._call(
            lambda: self.reviews.review(token, as_id(item_id, "item"), verdict, address)
        )

    def api_review_skip(self, token: str, item_id: int, request: gr.Request | None = None) -> bool:
        """Pass on an item dealt to the caller; it is not dealt to them again."""
        address = address_of(request, self.proxies)

        def run() -> bool:
            self.reviews.skip(token, as_id(item_id, "item"), address)
            return True

        return self._call(run)

    @staticmethod
    def _call(action):
        """Run `action`; a refusal becomes an error carrying its message (never a bare one)."""
        try:
            return action()
        except Refused as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def register(self) -> None:
        """Expose the endpoints on the Blocks being built."""
        for fn in (
            self.api_join,
            self.api_chat,
            self.api_chat_stream,
            self.api_rewrite,
            self.api_rate,
            self.api_label,
            self.api_undo,
            self.api_review_queue,
            self.api_review,
            self.api_review_skip,
        ):
            gr.api(fn, api_name=fn.__name__)


def optional_id(value: object, what: str) -> int | None:
    """None (a new conversation) or an id (`as_id`)."""
    return None if value is None else as_id(value, what)
