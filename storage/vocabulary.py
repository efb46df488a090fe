"""The closed vocabularies of the data: every layer reads them from here, and the schema's
CHECK constraints (storage/schema.py) enforce the same values in SQLite (tests/test_vocabulary.py
compares them). A vocabulary that code compares values against is a `Literal` type with its tuple
taken from it, so mypy checks a misspelt value where the type is named."""

from typing import Literal, get_args

TASKS = ("emotion", "preference")
"""A campaign's task: replies should convey a target emotion, or be what people prefer."""

CHAT_ROLES = ("system", "user", "assistant")
"""Roles of chat messages in prompts, training examples and exports."""

MAX_GROUPS = 26
"""Groups in a campaign: 1 to MAX_GROUPS (one name per letter, crowd.groups.GROUP_NAMES)."""

ROUND_POLICIES = ("manual", "timer", "count")
"""How a round closes: by the organizer only, on a timer, or on a count of corrections."""

TRAINING_MODES = ("sft", "dpo", "sft+dpo")
"""What a round trains on: SFT targets, preference pairs, or both."""

POINTS_RULES = ("paper", "shapley")
"""How a round's points are shared out (crowd.points)."""

CANDIDATE_KINDS = ("group", "union", "merged")
"""What a round's candidate is: one group's LoRA, one trained on every group's trusted data, or a
merge of the group candidates' adapters (crowd.rounds.candidates)."""

MERGE_METHODS = ("off", "ties_svd", "dare_ties_svd", "svd", "ties", "dare_ties", "linear")
"""How the merged candidate combines the group adapters: off, or one of PEFT's
`add_weighted_adapter` combination types (crowd.training.merge says what each does)."""

JUDGES = ("fixed", "sequential")
"""How an emotion round judges: every model on the same fixed number of replies, or in stages
that stop when the leader's lead over the champion is clear (crowd.rounds.judge)."""

Kind = Literal["rewrite", "choice", "emotion", "rating"]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""What a correction is: a rewrite of a reply, an A/B pick between two replies, an emotion label
of a reply, or thumbs (up 1, down -1) on a reply."""

KIND_WORDS: dict[Kind, str] = {
    "rewrite": "rewrite",
    "choice": "choice",
    "emotion": "emotion label",
    "rating": "rating",
}
"""How each kind reads in a sentence to its author ('Saved your emotion label.')."""

Rating = Literal[-1, 1]
RATINGS: tuple[Rating, ...] = get_args(Rating)
"""Thumbs on a reply: down (-1) or up (1)."""

Choice = Literal["a", "b", "tie", "both_bad"]
CHOICES: tuple[Choice, ...] = get_args(Choice)
"""An A/B pick between reply A (the one the chat goes on with) and reply B: one of them is
better, they are as good, or both are bad."""

CHOICE_WORDS: dict[Choice, str] = {
    "a": "reply A",
    "b": "reply B",
    "tie": "a tie",
    "both_bad": "both bad",
}
"""How each pick reads in a sentence ('you picked reply A', 'They picked: a tie')."""

CHOICE_BUTTONS: dict[Choice, str] = {
    "a": "A is better",
    "b": "B is better",
    "tie": "Tie",
    "both_bad": "Both bad",
}
"""Each pick's button under the two replies, in this order."""

Verdict = Literal["endorse", "reject"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
"""A review of a correction (and the organizer's confirmation, and a gold item's answer): the
correction is good and should teach, or it is bad and should not."""
