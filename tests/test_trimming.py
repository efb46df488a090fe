"""Replies cut by the token cap end at a sentence boundary, never mid-word; the service
stores the clean ending when the real model runs into the cap."""

import pytest
import torch

from crowd.serving.trimming import ELLIPSIS, end_cleanly, ends_a_sentence


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Joy is a feeling. It comes when some", "Joy is a feeling."),
        ('She said "go!" and then the door', 'She said "go!"'),
        ("First line\nsecond li", "First line"),
        ("Is it? Yes. Maybe not qu", "Is it? Yes."),
        ("A short start. Then a much longer sentence that goes on and on and never", None),
        ("no boundary at all, just wor", "no boundary at all, just" + ELLIPSIS),
        ("trailing comma before, cut", "trailing comma before" + ELLIPSIS),
        ("Supercalifragilistic", "Supercalifragilistic" + ELLIPSIS),
        ("Version 3.14 is out and", "Version 3.14 is out" + ELLIPSIS),
    ],
)
def test_a_cut_reply_ends_at_a_boundary(text, expected):
    if expected is None:  # the last boundary is too early: keep the words instead
        expected = text.rsplit(" ", 1)[0] + ELLIPSIS
    assert end_cleanly(text, cut=True) == expected


@pytest.mark.parametrize("text", ["Done.", "Really?  ", "Wow!”", "a list:\n- one\n", "ok"])
def test_a_reply_that_ended_on_its_own_is_kept(text):
    assert end_cleanly(text, cut=False) == text.rstrip()


def test_a_cut_reply_already_at_a_boundary_is_kept():
    assert end_cleanly("It ended here. ", cut=True) == "It ended here."
    assert ends_a_sentence("So (really).") and not ends_a_sentence("So (really")
    assert end_cleanly("", cut=True) == ""


def test_the_service_stores_a_capped_reply_ending_at_a_boundary(settings, new_generation):
    from crowd.service import CrowdService

    torch.manual_seed(0)  # sampled, so the tiny model writes words, not only line breaks
    generation = new_generation(max_new_tokens=24, temperature=1.0)
    try:
        service = CrowdService(settings, generation)
        token = service.join("Ada", consent=True).token
        *streamed, stored = list(service.send(token, None, "Tell me about the sea."))
    finally:
        generation.close()
    raw = streamed[-1].text
    assert stored.text == end_cleanly(raw, cut=True).strip()
    assert stored.text != raw.strip()  # the tiny model always runs into the cap
    assert ends_a_sentence(stored.text) or stored.text.endswith(ELLIPSIS)
    kept = stored.text.removesuffix(ELLIPSIS)
    assert raw.startswith(kept) and raw[len(kept)] in " ,;:-\n.!?"  # a whole word ends there
