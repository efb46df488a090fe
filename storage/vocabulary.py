"""The closed vocabularies of the data: every layer reads them from here, and the schema's
CHECK constraints (storage/schema.py) enforce the same values in SQLite."""

TASKS = ("emotion", "preference")
"""A campaign's task: replies should convey a target emotion, or be what people prefer."""

CHAT_ROLES = ("system", "user", "assistant")
"""Roles of chat messages in prompts, training examples and exports."""

MAX_GROUPS = 26
"""Groups in a campaign: 1 to MAX_GROUPS (one name per letter, crowd.campaigns.GROUP_NAMES)."""

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
