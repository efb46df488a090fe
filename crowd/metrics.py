"""The judging metrics and their rules: what each metric is called and which way is better, a
model's Score, and when a model or a sample has collapsed. Light (numpy only), so the views, the
model card and the round's judge read them without loading the evaluator (crowd.evaluation).

A candidate beats the champion only by more than `z` standard errors of the paired difference
of their distances (prompt j has the same sampling seed under every model), so a round does not
crown the noise of a few samples; and only when it has not collapsed. Degenerate text is caught
twice, with one threshold, MIN_DISTINCT:
- across replies: under MIN_DISTINCT of its sampled replies differ from each other (a model that
  says one prototypical phrase to everyone sits near the target's centroid without being a
  better model: the poisoning study's champion said "Good Job" to all 200 prompts,
  docs/results/poisoning.md);
- within one reply (`repeats_itself`): under MIN_DISTINCT of its sentences, or of its word
  trigrams, differ (a crowned model answered a question with one sentence five times, which
  scored 0.00 from the target). Such a sample counts as collapsed: it scores the worst distance
  a reply can have (`worst_distance`), so it never pulls the mean towards the target, and it
  counts as not distinct.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

LOWER_IS_BETTER = {"emotion_l2": True, "pref_accuracy": False}
"""metric -> whether a lower value is better: the emotion task's mean L2 distance to the target
vector (lower is better), the preference task's held-out pair accuracy (higher is better)."""

MIN_DISTINCT = 0.5
"""The least share of distinct texts among a model's sampled replies for it to win a round, and
the least share of distinct sentences (or word trigrams) within one reply for it to count."""
MIN_SENTENCES = 3  # a reply is judged on its sentences from this many on
MIN_TRIGRAMS = 8  # and on its word trigrams from this many on (10 words)


def lower_is_better(metric: str | None) -> bool:
    """Whether a lower value of `metric` is better; a metric not (yet) known reads as a distance."""
    return LOWER_IS_BETTER.get(metric or "", True)


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    loss: float | None
    n_items: int
    detail: dict

    def better_than(self, other: Score, margin: float = 0.0, z: float = 0.0) -> bool:
        """Strictly better by more than `margin` (in the metric's units) plus `z` standard errors
        of the paired difference (emotion scores, which keep every sample's distance); loss
        breaks ties. A model whose sampled replies are mostly the same text (under MIN_DISTINCT
        distinct) has collapsed and is never better."""
        if self.collapsed:
            return False
        sign = -1.0 if LOWER_IS_BETTER[self.metric] else 1.0
        gain = sign * (self.value - other.value)
        if z > 0 and gain > 0:
            return gain > margin + z * self.paired_se(other)
        if gain > margin:
            return True
        if gain == 0 and margin == 0 and self.loss is not None and other.loss is not None:
            return self.loss < other.loss
        return False

    def paired_se(self, other: Score) -> float:
        """The standard error of the mean per-sample difference to `other` (judged on the same
        prompts and seeds); without per-sample values, the unpaired one from the two SDs."""
        mine, theirs = self.detail.get("distances"), other.detail.get("distances")
        if mine and theirs and len(mine) == len(theirs) and len(mine) > 1:
            return float(np.std(np.subtract(mine, theirs), ddof=1) / math.sqrt(len(mine)))
        return math.hypot(self.se, other.se)

    @property
    def se(self) -> float:
        """The standard error of the mean value, from the per-sample SD (0 without one)."""
        return self.detail.get("sd", 0.0) / math.sqrt(max(1, self.n_items))

    @property
    def collapsed(self) -> bool:
        """Fewer than MIN_DISTINCT of its sampled replies are distinct texts that do not repeat
        themselves: one phrase for everything, or one phrase over and over."""
        return self.detail.get("distinct", 1.0) < MIN_DISTINCT

    @property
    def oriented(self) -> float:
        """The metric with higher = better, for ranking and points."""
        return -self.value if LOWER_IS_BETTER[self.metric] else self.value


def repeats_itself(text: str) -> bool:
    """Whether a reply says the same thing over and over: under MIN_DISTINCT of its sentences
    (from MIN_SENTENCES on) or of its word trigrams (from MIN_TRIGRAMS on) are distinct."""
    sentences = [
        " ".join(re.findall(r"\w+", part.lower())) for part in re.split(r"[.!?…\n]+", text)
    ]
    sentences = [s for s in sentences if s]
    if len(sentences) >= MIN_SENTENCES and len(set(sentences)) / len(sentences) < MIN_DISTINCT:
        return True
    words = re.findall(r"\w+", text.lower())
    trigrams = list(zip(words, words[1:], words[2:]))
    return len(trigrams) >= MIN_TRIGRAMS and len(set(trigrams)) / len(trigrams) < MIN_DISTINCT


def worst_distance(target: np.ndarray) -> float:
    """What a degenerate sample scores: the distance to `target` of the single emotion farthest
    from it (a one-hot vector), as far as a real reply of one emotion can be."""
    return float(np.linalg.norm(np.eye(len(target)) - target[None, :], axis=1).max())
