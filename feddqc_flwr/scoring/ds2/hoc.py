"""DS2 step 3: estimate the score transition matrix T[y, i] = P(rated i | true score y) by HOC.

High-order consensus (Zhu et al. 2021, as in DS2's docta/core/hoc.py): if a sample and its two
nearest neighbours share the true score (2-NN clusterability), the frequencies of their rating
triplets are determined by T and the clean prior p:
    c1 = T' p,  c2[i,j] = sum_y p_y T[y,i] T[y,j],  c3[i,j,k] = sum_y p_y T[y,i] T[y,j] T[y,k].
We measure c1, c2, c3 on random 90% subsamples (neighbours searched within each subsample) and
fit T = row-softmax(T_logit), p = softmax(p_logit) with Adam, keeping the best iterate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from feddqc_flwr.scoring.neighbours import nearest_neighbours

ROUNDS = 50
SAMPLE_FRACTION = 0.9
MAX_SAMPLE = 50_000
STEPS = 1501
LEARNING_RATE = 0.1


@dataclass(frozen=True)
class Consensus:
    """Empirical first-, second- and third-order rating consensus (sums to 1 each)."""

    c1: np.ndarray
    c2: np.ndarray
    c3: np.ndarray


@dataclass(frozen=True)
class TransitionEstimate:
    """T (rows = true score, columns = rating), clean prior p and the rating histogram."""

    transition: np.ndarray
    p_clean: np.ndarray
    p_rated: np.ndarray


def subsample(n: int, rng: np.random.Generator) -> np.ndarray:
    """DS2's per-round sample: min(50000, 90%) of the points, at least 3 when there are 3."""
    size = min(MAX_SAMPLE, max(min(3, n), int(SAMPLE_FRACTION * n)))
    return np.sort(rng.choice(n, size=size, replace=False))


def consensus(embeddings: np.ndarray, ratings: np.ndarray, num_classes: int, *, rounds: int = ROUNDS,
              seed: int = 0) -> Consensus:
    """Rating (own, 1st-NN, 2nd-NN) frequencies averaged over `rounds` random subsamples."""
    rng = np.random.default_rng(seed)
    c1, c2, c3 = np.zeros(num_classes), np.zeros((num_classes,) * 2), np.zeros((num_classes,) * 3)
    for _ in range(rounds):
        sample = subsample(len(ratings), rng)
        idx, dist = nearest_neighbours(embeddings[sample], 2)
        ok = np.isfinite(dist).all(axis=1)
        own, first, second = ratings[sample][ok], ratings[sample][idx[ok, 0]], ratings[sample][idx[ok, 1]]
        if not len(own):
            raise ValueError("HOC needs at least 3 distinct samples")
        c1 += np.bincount(own, minlength=num_classes) / len(own)
        np.add.at(c2, (own, first), 1.0 / len(own))
        np.add.at(c3, (own, first, second), 1.0 / len(own))
    return Consensus(c1 / rounds, c2 / rounds, c3 / rounds)


def _model_consensus(t: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (t.T @ p, torch.einsum("y,yi,yj->ij", p, t, t), torch.einsum("y,yi,yj,yk->ijk", p, t, t, t))


def fit_transition(observed: Consensus, *, steps: int = STEPS, lr: float = LEARNING_RATE,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """T and p minimising ||c1 - c1^|| + ||c2 - c2^|| + ||c3 - c3^|| (Frobenius), best iterate
    after step 5 (DS2's init: T_logit = 5I - 1, p_logit = 1/K + U(0, 0.1))."""
    k = len(observed.c1)
    gen = torch.Generator().manual_seed(seed)
    t_logit = (5.0 * torch.eye(k, dtype=torch.float64) - 1.0).requires_grad_()
    p_logit = (1.0 / k + 0.1 * torch.rand(k, generator=gen, dtype=torch.float64)).requires_grad_()
    targets = [torch.as_tensor(c, dtype=torch.float64) for c in (observed.c1, observed.c2, observed.c3)]
    optimizer = torch.optim.Adam([t_logit, p_logit], lr=lr)
    best = (float("inf"), None, None)
    for step in range(steps):
        t, p = torch.softmax(t_logit, dim=1), torch.softmax(p_logit, dim=0)
        loss = sum(torch.linalg.norm(m - c) for m, c in zip(_model_consensus(t, p), targets, strict=True))
        if step > 5 and loss.item() < best[0]:
            best = (loss.item(), t.detach().numpy().copy(), p.detach().numpy().copy())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return best[1], best[2]


def estimate_transition(embeddings: np.ndarray, ratings: np.ndarray, num_classes: int, *,
                        rounds: int = ROUNDS, seed: int = 0) -> TransitionEstimate:
    """HOC estimate of T and the clean prior from ratings and normalised embeddings."""
    ratings = np.asarray(ratings, dtype=np.int64)
    transition, p_clean = fit_transition(consensus(embeddings, ratings, num_classes, rounds=rounds, seed=seed),
                                         seed=seed)
    p_rated = np.bincount(ratings, minlength=num_classes) / len(ratings)
    return TransitionEstimate(transition=transition, p_clean=p_clean, p_rated=p_rated)
