"""DS2 steps 4-5: find misrated samples with the k-NN vote, fix confident ones, long-tail score.

Follows DS2's docta (apis/detect.py SimiFeat-rank, core/knn.py, core/get_lr_score.py):
- per rated class c, the share of misrated samples is r_c = 1 - T[c,c] p_clean[c] / p_rated[c]
  (clipped into [0.05, 0.95]);
- each of `epochs` rounds takes a random 90% subsample; a sample's vote is
  v[s] = sum over its k nearest (itself included, at distance 2 d1 - d2) of (1 - dist) 1[rating = s],
  L2-normalised; within rated class c the top r_c fraction by -log v[own rating] are flagged and
  the vote's argmax is recorded as a suggestion (a sample whose whole neighbourhood agrees with
  its rating is never flagged: with many such ties the percentile would otherwise be 0 and flag
  the whole class);
- misrated if (flagged + 1) / (sampled + 2) > 0.5; suggested score = argmax of the
  Laplace-smoothed suggestion counts without the own rating; confidence = its share x that rate;
- curated score = suggestion where misrated and confidence >= threshold (DS2's 0.5), else rating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feddqc_flwr.scoring.ds2.hoc import TransitionEstimate, subsample
from feddqc_flwr.scoring.neighbours import nearest_neighbours

EPOCHS = 51
NEIGHBOURS = 10  # k of the vote and of the long-tail score, the sample itself included
CONFIDENCE = 0.5
_AGREES = 1e-9  # -log vote of a sample whose whole neighbourhood shares its rating: never flagged


@dataclass(frozen=True)
class Curation:
    """Per-sample curated score, misrated flag, suggested score and its confidence."""

    curated: np.ndarray
    misrated: np.ndarray
    suggested: np.ndarray
    confidence: np.ndarray


def noise_rates(estimate: TransitionEstimate) -> np.ndarray:
    """r_c = P(misrated | rated c) from T and the priors, clipped like DS2 (0.05 .. 0.95)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        clean = np.diag(estimate.transition) * estimate.p_clean / estimate.p_rated
    rates = 1.0 - np.nan_to_num(clean, nan=1.0)
    return np.where(rates >= 1.0, 0.95, np.where(rates <= 0.0, 0.05, rates))


def _votes(ratings: np.ndarray, idx: np.ndarray, dist: np.ndarray, num_classes: int) -> np.ndarray:
    """L2-normalised similarity-weighted rating votes of each point's neighbourhood (self included)."""
    self_dist = np.where(np.isfinite(dist[:, 1]), 2 * dist[:, 0] - dist[:, 1], 0.0) if dist.shape[1] > 1 \
        else np.zeros(len(dist))
    weights = np.where(np.isfinite(dist), 1.0 - dist, 0.0)
    votes = np.zeros((len(ratings), num_classes))
    rows = np.repeat(np.arange(len(ratings)), idx.shape[1])
    np.add.at(votes, (rows, ratings[idx].ravel()), weights.ravel())
    votes[np.arange(len(ratings)), ratings] += 1.0 - self_dist
    return votes / np.maximum(np.linalg.norm(votes, axis=1, keepdims=True), 1e-12)


def curate(embeddings: np.ndarray, ratings: np.ndarray, estimate: TransitionEstimate, *, k: int = NEIGHBOURS,
           epochs: int = EPOCHS, threshold: float = CONFIDENCE, seed: int = 0) -> Curation:
    """DS2's misrated-score detection and confidence-gated correction."""
    ratings = np.asarray(ratings, dtype=np.int64)
    n, num_classes = len(ratings), len(estimate.p_rated)
    rates = noise_rates(estimate)
    rng = np.random.default_rng(seed)
    flagged, sampled = np.zeros(n), np.zeros(n)
    suggestions = np.zeros((n, num_classes))
    for _ in range(epochs):
        sample = subsample(n, rng)
        own = ratings[sample]
        idx, dist = nearest_neighbours(embeddings[sample], max(1, k - 1))
        votes = _votes(own, idx, dist, num_classes)
        score = -np.log(np.maximum(votes[np.arange(len(sample)), own], 1e-12))
        sampled[sample] += 1
        for c in np.unique(own):
            members = np.flatnonzero(own == c)
            cut = np.percentile(score[members], (1.0 - rates[c]) * 100)
            hit = members[(score[members] >= cut) & (score[members] > _AGREES)]
            flagged[sample[hit]] += 1
            suggestions[sample[hit], votes[hit].argmax(axis=1)] += 1
    noisy_avg = (flagged + 1) / (sampled + 2)
    smoothed = suggestions + 1.0
    smoothed[np.arange(n), ratings] = 0.0
    suggested = smoothed.argmax(axis=1)
    confidence = smoothed.max(axis=1) / smoothed.sum(axis=1) * noisy_avg
    misrated = noisy_avg > 0.5
    curated = np.where(misrated & (confidence >= threshold), suggested, ratings)
    return Curation(curated=curated, misrated=misrated, suggested=suggested, confidence=confidence)


def long_tail_scores(embeddings: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """2 / (1 + exp(-d)) - 1 in [0, 1), d = mean cosine distance to the k nearest points, the
    sample itself (distance 0) included as in DS2; high = far from others = rare."""
    _, dist = nearest_neighbours(embeddings, max(1, k - 1))
    finite = np.isfinite(dist)
    mean = np.where(finite, dist, 0.0).sum(axis=1) / (finite.sum(axis=1) + 1)
    return 2.0 / (1.0 + np.exp(-mean)) - 1.0
