"""BERTScore-style similarity of generated and reference answers, with the offline MiniLM encoder.

This is BERTScore-F1 (Zhang et al., 2020) computed on all-MiniLM-L6-v2's last-layer token
embeddings instead of RoBERTa-large's: each token is matched greedily to its most similar token
of the other text by cosine, precision/recall are the mean best matches of the candidate /
reference tokens, F1 their harmonic mean. No idf weighting and no baseline rescaling, and the
[CLS]/[SEP] tokens are left out. Values are therefore comparable only between runs of this code,
not with published BERTScores. Identical texts score 1, unrelated sentences ~0.0-0.1, and
single words of one kind high ('yes' vs 'no' ~0.8), so use accuracy for closed answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddqc_flwr.llm.encoder import sentence_encoder


def greedy_match_f1(candidate: np.ndarray, reference: np.ndarray) -> float:
    """BERTScore-F1 of two token-embedding matrices (rows = tokens); 0 when either is empty."""
    if not len(candidate) or not len(reference):
        return 0.0
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    sim = cand @ ref.T
    precision, recall = float(sim.max(axis=1).mean()), float(sim.max(axis=0).mean())
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def token_embeddings(texts: Sequence[str]) -> list[np.ndarray]:
    """MiniLM token embeddings per text without [CLS]/[SEP] (empty text -> no rows)."""
    outputs = sentence_encoder().encode(list(texts), output_value="token_embeddings", convert_to_numpy=False,
                                        show_progress_bar=False)
    return [np.zeros((0, 1)) if not t.strip() else o.float().cpu().numpy()[1:-1] for t, o in zip(texts, outputs,
                                                                                              strict=True)]


def answer_similarity(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, list[float]]:
    """Mean BERTScore-F1 (MiniLM tokens) of each prediction against its reference (NaN for no pairs),
    and each pair's F1."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return float("nan"), []
    cands, refs = token_embeddings(predictions), token_embeddings(references)
    scores = [greedy_match_f1(c, r) for c, r in zip(cands, refs, strict=True)]
    return float(np.mean(scores)), scores
