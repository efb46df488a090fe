"""The campaign's emotion scorer as a round sees it: loaded once, and the offline default
retrained on volunteers' emotion labels when new ones arrive."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from storage import rounds as store
from storage.db import connect

if TYPE_CHECKING:  # heavy (numpy, the embedder): loaded on the first call
    from crowd.scoring.scorers import EmotionScorer


class ScorerCache:
    """The campaign's emotion scorer; the offline default is retrained on volunteers' emotion
    labels between rounds (once per new batch of labels)."""

    def __init__(self, spec: str, data_dir: Path, db_path: Path):
        self.spec, self.data_dir, self.db_path = spec, data_dir, db_path
        self._base: EmotionScorer | None = None
        self._tuned: dict[tuple[int, int], EmotionScorer] = {}

    def __call__(self, campaign_id: int) -> EmotionScorer:
        from crowd.scoring.scorers import EmbeddingHeadScorer, load_scorer

        if self._base is None:
            self._base = load_scorer(self.spec, self.data_dir)
        base = self._base
        with connect(self.db_path) as db:
            labels = store.emotion_labels(db, campaign_id)
        if not labels or not isinstance(base, EmbeddingHeadScorer):
            return base  # a Hub scorer is not retrained
        key = (campaign_id, len(labels))
        if key not in self._tuned:
            self._tuned = {
                key: base.with_labels([t for t, _ in labels], [lab for _, lab in labels])
            }
        return self._tuned[key]
