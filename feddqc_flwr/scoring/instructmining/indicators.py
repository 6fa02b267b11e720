"""InstructMining's natural-language indicators, one value per sample.

- input_len / output_len: tokens of the prompt body (instruction + input) / of the response,
  with the scoring tokenizer;
- ppl: response perplexity given the instruction, exp(L(response | instruction)), the same
  pass as the `ppl` scorer;
- mtld: McCarthy & Jarvis (2010) bidirectional MTLD of the response, TTR threshold 0.72;
- knn6: Euclidean distance (on normalised MiniLM vectors) to the 6th nearest distinct sample of
  the same pool (fewer distinct samples: the farthest one there is);
- reward: only where a reward model is given (`reward_fn`); none ships with the app.
The paper's UniEval naturalness/coherence/understandability need UniEval and are not offered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from feddqc_flwr.llm.encoder import embed
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.likelihood import conditioned_loss
from feddqc_flwr.scoring.neighbours import nearest_neighbours

INDICATORS = ("input_len", "output_len", "ppl", "mtld", "knn6", "reward")
MTLD_THRESHOLD = 0.72
KNN_RANK = 6
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

RewardFn = Callable[[Sequence[Row]], np.ndarray]


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, inner apostrophes kept), punctuation dropped."""
    return _WORD.findall(text.lower())


def _factors(tokens: Sequence[str], threshold: float) -> float:
    """Full factors (TTR fell to the threshold) plus the partial last one, (1 - TTR)/(1 - threshold)."""
    factors, types, count = 0.0, set(), 0
    ttr = 1.0
    for token in tokens:
        count += 1
        types.add(token)
        ttr = len(types) / count
        if ttr <= threshold:
            factors, types, count, ttr = factors + 1, set(), 0, 1.0
    return factors + (1.0 - ttr) / (1.0 - threshold)


def mtld(text: str, threshold: float = MTLD_THRESHOLD) -> float:
    """Mean of forward and backward len(tokens) / factors; a text whose TTR never drops below
    1 (no repeated word) has no factor, and gets its length (the most an MTLD can say)."""
    tokens = words(text)
    scores = []
    for seq in (tokens, tokens[::-1]):
        factors = _factors(seq, threshold)
        scores.append(len(seq) / factors if factors > 0 else float(len(seq)))
    return float(np.mean(scores))


def knn_distance(embeddings: np.ndarray, rank: int = KNN_RANK) -> np.ndarray:
    """Euclidean distance to the rank-th nearest distinct point (the farthest, if fewer exist)."""
    _, cosine = nearest_neighbours(embeddings, rank)
    finite = np.where(np.isfinite(cosine), cosine, -1.0).max(axis=1)
    return np.where(finite >= 0, np.sqrt(2.0 * np.clip(finite, 0.0, None)), np.nan)


def _prompt_text(row: Mapping[str, Any]) -> str:
    return row["instruction"] if not row.get("input") else f"{row['instruction']}\n{row['input']}"


def compute_indicators(rows: Sequence[Row], ctx: ScoringContext, names: Sequence[str],
                       reward_fn: RewardFn | None = None) -> dict[str, np.ndarray]:
    """The requested indicators; asking for `reward` without a reward_fn is an error."""
    unknown = sorted(set(names) - set(INDICATORS))
    if unknown:
        raise ValueError(f"unknown InstructMining indicator(s) {unknown}: known are {', '.join(INDICATORS)}")
    tok = ctx.tokenizer
    makers: dict[str, Callable[[], np.ndarray]] = {
        "input_len": lambda: np.array([len(tok(_prompt_text(r), add_special_tokens=False).input_ids) for r in rows],
                                      dtype=np.float64),
        "output_len": lambda: np.array([len(tok(r["response"], add_special_tokens=False).input_ids) for r in rows],
                                       dtype=np.float64),
        "ppl": lambda: np.exp(conditioned_loss(rows, ctx)),
        "mtld": lambda: np.array([mtld(r["response"]) for r in rows]),
        "knn6": lambda: knn_distance(embed([f"{_prompt_text(r)}\n{r['response']}" for r in rows])),
    }
    if "reward" in names:
        if reward_fn is None:
            raise ValueError("the reward indicator needs a reward model (reward_fn); none is configured")
        makers["reward"] = lambda: np.asarray(reward_fn(rows), dtype=np.float64)
    return {name: makers[name]() for name in names}
