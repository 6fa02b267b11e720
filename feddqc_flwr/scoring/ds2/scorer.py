"""DS2Scorer: LLM rating -> HOC transition matrix -> k-NN curation -> long-tail diversity.

Keep-score = curated class (0..5) + long-tail score (in [0, 1)), so sorting by it is DS2's
final selection: all of class 5 first, then 4, ..., and within a class the rarer samples first.
The last run's transition matrix and curation counts stay in `DS2Scorer.last_report` (plain
JSON-able values) for the client's node-local report; none of it is sent to the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from feddqc_flwr.llm.encoder import embed
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.ds2.curation import curate, long_tail_scores
from feddqc_flwr.scoring.ds2.hoc import estimate_transition
from feddqc_flwr.scoring.ds2.rating import NUM_CLASSES, EndpointRater, LocalRater, Rater, rate, render_sample
from feddqc_flwr.scoring.neighbours import nearest_neighbours


class DS2Scorer:
    """DS2 (Pang et al. 2025) score curation on the client's own pool.

    Raw score = the rater's overall 1-10 rating, compressed to classes 0..5 and curated; higher
    is better. Keep-score = curated class + long-tail diversity in [0, 1). Rater: the scoring
    model itself (greedy, then sampled retries) unless the run config's `rater-url` and
    `rater-model` name an OpenAI-compatible endpoint. Cost: one generation of up to 128 tokens
    per sample (+ retries) and one MiniLM embedding; HOC and curation are cheap.
    """

    name = "ds2"
    direction = "higher curated rating is better, then higher long-tail diversity; keep-score = class + diversity"
    cost = "1 LLM rating generation per sample (+ retries on parse failure) + 1 sentence embedding"

    def __init__(self, rater: Rater | None = None, *, retries: int = 3, max_new_tokens: int = 128) -> None:
        self.rater, self.retries, self.max_new_tokens = rater, retries, max_new_tokens
        self.last_report: dict[str, Any] = {}

    def _rater(self, ctx: ScoringContext) -> Rater:
        if self.rater is not None:
            return self.rater
        url, model = ctx.options.get("rater-url", ""), ctx.options.get("rater-model", "")
        if url:
            return EndpointRater(ChatEndpoint(url, model), self.max_new_tokens)
        return LocalRater(ctx.model, ctx.tokenizer, max_sample_tokens=ctx.max_length,
                          max_new_tokens=self.max_new_tokens, seed=ctx.seed)

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        ratings = rate(rows, self._rater(ctx), retries=self.retries, batch_size=ctx.batch_size)
        classes = ratings.classes
        embeddings = embed([render_sample(r) for r in rows])
        curated, misrated, transition = classes, np.zeros(len(rows), dtype=bool), None
        if np.isfinite(nearest_neighbours(embeddings, 2)[1]).all(axis=1).sum() >= 3:
            estimate = estimate_transition(embeddings, classes, NUM_CLASSES, seed=ctx.seed)
            curation = curate(embeddings, classes, estimate, seed=ctx.seed)
            curated, misrated, transition = curation.curated, curation.misrated, estimate
        self.last_report = {
            "rated": len(rows), "parse-failures": ratings.failures, "retried": ratings.retried,
            "misrated": int(misrated.sum()), "curated": int((curated != classes).sum()),
            "rated-histogram": np.bincount(classes, minlength=NUM_CLASSES).tolist(),
            "curated-histogram": np.bincount(curated, minlength=NUM_CLASSES).tolist(),
            "transition-matrix": None if transition is None else np.round(transition.transition, 4).tolist(),
            "p-clean": None if transition is None else np.round(transition.p_clean, 4).tolist(),
        }
        return curated + long_tail_scores(embeddings)
