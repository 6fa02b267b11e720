"""Quality-aware hierarchies: R rounds in K stages, easy (high IRA) to hard.

At the start of stage k a client re-scores every sample it has not trained yet (Algorithm 1:
D_n = D_n \\ H_n(k-1)), filters those under lambda (with several criteria, a row must pass each
one's own lambda), sorts the rest by score, splits them into K-k+1 equal parts and trains the
whole stage on the top part. Everything else, the filtered
rows included, waits to be re-scored by a better global model (`client_progress`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feddqc_flwr.selection.joint_rank import joint_keep_score


def hierarchy_of_round(server_round: int, num_rounds: int, hierarchies: int) -> int:
    """Stage (1..K) of a 1-indexed round; stages are as equal as the rounds allow."""
    return (server_round - 1) * hierarchies // num_rounds + 1


def is_hierarchy_start(server_round: int, num_rounds: int, hierarchies: int) -> bool:
    """True on the first round of a stage (when clients re-score)."""
    return server_round == 1 or hierarchy_of_round(server_round - 1, num_rounds, hierarchies) != \
        hierarchy_of_round(server_round, num_rounds, hierarchies)


def is_hierarchy_end(server_round: int, num_rounds: int, hierarchies: int) -> bool:
    """True on the last round of a stage (when the server checkpoints the adapter)."""
    return server_round == num_rounds or is_hierarchy_start(server_round + 1, num_rounds, hierarchies)


@dataclass(frozen=True)
class StageSelection:
    """What one client does with its pool at the start of a stage."""

    train_ids: list[int]
    waiting_ids: list[int]
    dropped_ids: list[int]


ORDERS = ("descending", "ascending", "random", "none")


def _columns(scores: np.ndarray, criteria: int) -> np.ndarray:
    """Scores as (rows, columns); no rows at all is (0, criteria), whatever shape it came in."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores.reshape(0, criteria) if scores.size == 0 else scores.reshape(len(scores), -1)


def passes_all(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Rows whose every criterion is finite and at or above its threshold ((n, C) scores, (C,) thresholds)."""
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    scores = _columns(scores, thresholds.size)
    if scores.shape[1] != thresholds.size:
        raise ValueError(f"{scores.shape[1]} score column(s) but {thresholds.size} threshold(s)")
    return (np.isfinite(scores) & (scores >= thresholds)).all(axis=1)


def select_stage(ids: list[int], scores: np.ndarray, thresholds: np.ndarray, stage: int,
                 hierarchies: int, order: str = "descending", seed: int = 0) -> StageSelection:
    """Filter by every criterion's threshold, order the rest, train on the first of K-k+1 parts.

    `scores` is (n, C): one keep-score column per criterion, `thresholds` one lambda per column;
    a row is kept only when it passes them all. `descending` is FedDQC (easy to hard: by the score,
    or with several criteria by the rank-min among the kept rows, so rows good by every criterion
    come first), `ascending` hard to easy, `random` a seeded shuffle; `none` (no hierarchy)
    is a shuffle too, run with K = 1. Ties break by id. Rows with a NaN score (nothing left to
    score after truncation) are dropped.
    """
    if not 1 <= stage <= hierarchies:
        raise ValueError(f"stage {stage} outside 1..{hierarchies}")
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: allowed values are {', '.join(ORDERS)}")
    ids_arr = np.asarray(ids, dtype=np.int64)
    scores = _columns(scores, np.asarray(thresholds).size)
    keep = passes_all(scores, thresholds)
    kept_ids, kept_scores = ids_arr[keep], joint_keep_score(scores[keep])
    if order in ("random", "none"):
        ranked = np.random.default_rng(seed).permutation(np.sort(kept_ids))
    else:
        key = -kept_scores if order == "descending" else kept_scores
        ranked = kept_ids[np.lexsort((kept_ids, key))]
    parts = np.array_split(ranked, hierarchies - stage + 1)
    return StageSelection(
        train_ids=parts[0].tolist(),
        waiting_ids=np.concatenate(parts[1:]).tolist() if len(parts) > 1 else [],
        dropped_ids=ids_arr[~keep].tolist(),
    )
