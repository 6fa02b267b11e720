"""NUGGETS golden score: does a sample, used as a one-shot example, help the model on anchors?

GS(z) = fraction of anchor rows j whose summed log-prob of the anchor response rises when z is
prepended: 1[log p(y_j | z, x_j) > log p(y_j | x_j)]. NUGGETS runs z once and reuses its KV cache
as the prefix; for a causal LM that equals scoring the plain concatenation [start] z x_j y_j, up
to the token boundary between z and x_j (we tokenize the pieces separately, so there is none).
Candidates and anchors use our training template (NUGGETS has its own "Instruction:/Response:"
format), and the candidate keeps its EOS, which separates it from the anchor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feddqc_flwr.llm.prompts import IGNORE_INDEX, EncodedPair, encode_pair, start_token_id
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.nll import mean_nll

_SEQUENCES_PER_CALL = 1024  # candidate x anchor sequences built at once (bounds host memory)


def _one_shot(start: int, candidate: EncodedPair, anchor: EncodedPair) -> tuple[list[int], list[int]]:
    prefix = [start, *candidate.prompt_ids, *candidate.response_ids, *anchor.prompt_ids]
    return prefix + list(anchor.response_ids), [IGNORE_INDEX] * len(prefix) + list(anchor.response_ids)


class NuggetsScorer:
    """NUGGETS one-shot vs zero-shot gain on the anchor rows in `ctx.reference_rows`.

    Raw golden score in [0, 1]; higher = better; keep-score = golden score. Each candidate and
    each anchor gets half of `max_length`. Cost: |anchors| forward passes per sample (of about
    twice the usual length), plus |anchors| once for the zero-shot baseline.
    """

    name = "nuggets"
    direction = "higher raw golden score is better; keep-score = golden score"
    cost = "|anchors| forward passes per sample (+ |anchors| once)"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        if not ctx.reference_rows:
            raise ValueError("nuggets needs anchor rows in ScoringContext.reference_rows")
        tok, half = ctx.tokenizer, ctx.max_length // 2
        start, pad = start_token_id(tok), int(tok.pad_token_id)
        anchors = [encode_pair(a, tok, ctx.template, half) for a in ctx.reference_rows]
        n_tokens = np.array([len(a.response_ids) for a in anchors], dtype=np.float64)
        zero_shot = -mean_nll(ctx.model, [a.conditioned(start) for a in anchors], pad, ctx.batch_size,
                              ctx.device, ctx.compute_dtype) * n_tokens
        out = np.full(len(rows), np.nan)
        chunk = max(1, _SEQUENCES_PER_CALL // len(anchors))
        for first in range(0, len(rows), chunk):
            candidates = [encode_pair(r, tok, ctx.template, ctx.max_length - half)
                          for r in rows[first : first + chunk]]
            sequences = [_one_shot(start, c, a) for c in candidates for a in anchors]
            nll = mean_nll(ctx.model, sequences, pad, ctx.batch_size, ctx.device, ctx.compute_dtype)
            one_shot = -nll.reshape(len(candidates), len(anchors)) * n_tokens
            out[first : first + len(candidates)] = (one_shot > zero_shot).mean(axis=1)
        return out
