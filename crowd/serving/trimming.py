"""How a reply that ran into the token cap ends: at the last sentence boundary, or failing
that at the last whole word with an ellipsis, never mid-word. Pure text rules."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (or their CJK forms), maybe followed by closing quotes or brackets,
# then whitespace or the end; a line break ends a list item or a paragraph the same way.
_BOUNDARY = re.compile(r"[.!?…。！？][\"'”’)\]]*(?=\s|$)|\n")
ELLIPSIS = "…"


def ends_a_sentence(text: str) -> bool:
    """Whether `text` (trailing whitespace ignored) already ends at a sentence boundary."""
    stripped = text.rstrip()
    return bool(stripped) and any(m.end() == len(stripped) for m in _BOUNDARY.finditer(stripped))


def end_cleanly(text: str, cut: bool, keep: float = 0.4) -> str:
    """The reply as shown and stored. `cut`: generation stopped at the token cap, not at the
    end of the model's answer. A cut reply ends at its last sentence boundary when that keeps
    at least `keep` of the text (0-1); otherwise at its last whole word, followed by "…"."""
    text = text.rstrip()
    if not cut or not text or ends_a_sentence(text):
        return text
    ends = [m.end() for m in _BOUNDARY.finditer(text)]
    if ends and ends[-1] >= keep * len(text):
        return text[: ends[-1]].rstrip()
    return _last_whole_word(text) + ELLIPSIS


def _last_whole_word(text: str) -> str:
    """`text` without its last (maybe partial) word and the punctuation left dangling before
    it; a text of one word is kept whole, since cutting it would leave nothing."""
    head, space, _ = text.rpartition(" ")
    if not space or not head.strip():
        return text
    return head.rstrip(" ,;:-–—(\"'“‘")
