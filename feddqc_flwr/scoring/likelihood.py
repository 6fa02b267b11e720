"""Likelihood scorers: IRA, response loss, perplexity and IFD, all from `mean_nll`.

Every pass scores the same response tokens (`encode_pair`, EOS included) with the same start
token, so the scores differ only in what precedes the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from feddqc_flwr.prompts import ALPACA_RESPONSE_MARKER, IGNORE_INDEX, EncodedPair, encode_pair, start_token_id
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.nll import mean_nll


def _pairs(rows: Sequence[Row], ctx: ScoringContext) -> list[EncodedPair]:
    return [encode_pair(row, ctx.tokenizer, ctx.template, ctx.max_length) for row in rows]


def _nll(ctx: ScoringContext, sequences: list[tuple[list[int], list[int]]]) -> np.ndarray:
    return mean_nll(ctx.model, sequences, int(ctx.tokenizer.pad_token_id), ctx.batch_size, ctx.device,
                    ctx.compute_dtype)


def conditioned_loss(rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
    """L(response | instruction): mean NLL of the response tokens after the training prompt."""
    start = start_token_id(ctx.tokenizer)
    return _nll(ctx, [p.conditioned(start) for p in _pairs(rows, ctx)])


class IRAScorer:
    """FedDQC's IRA = L(response) − L(response | instruction); high = instruction explains the
    response = clean. Keep-score = IRA unchanged. Cost: 2 forward passes per sample."""

    name = "ira"
    direction = "higher raw IRA is better; keep-score = IRA"
    cost = "2 forward passes per sample (conditioned + response alone)"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return ira_scores(ctx.model, ctx.tokenizer, rows, template=ctx.template, max_length=ctx.max_length,
                          batch_size=ctx.batch_size, device=ctx.device, compute_dtype=ctx.compute_dtype).ira


class LossScorer:
    """Response loss given the instruction (our training loss); low loss = fits the model's view
    of good data. Keep-score = −loss. Cost: 1 forward pass per sample."""

    name = "loss"
    direction = "lower raw loss is better; keep-score = -loss"
    cost = "1 forward pass per sample"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return -conditioned_loss(rows, ctx)


class PerplexityScorer:
    """Response perplexity given the instruction, exp(L(response | instruction)); low = good.
    Keep-score = −ppl (same ranking as `loss`, kept as the baseline papers report).
    Cost: 1 forward pass per sample."""

    name = "ppl"
    direction = "lower raw perplexity is better; keep-score = -ppl"
    cost = "1 forward pass per sample"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return -np.exp(conditioned_loss(rows, ctx))


@dataclass(frozen=True)
class IFDScores:
    """Per-sample IFD and its two losses (NaN = could not be scored)."""

    ifd: np.ndarray
    loss_conditioned: np.ndarray
    loss_unconditioned: np.ndarray

    @property
    def misaligned(self) -> np.ndarray:
        """IFD > 1: the instruction makes the response harder to predict (Cherry_LLM drops these)."""
        return np.nan_to_num(self.ifd, nan=0.0) > 1.0


def ifd_scores(rows: Sequence[Row], ctx: ScoringContext) -> IFDScores:
    """IFD = L(response | instruction) / L(response | '### Response:') as in Cherry_LLM.

    Cherry's unconditioned pass is not the bare response: it keeps the response marker. We use
    our template's marker (ALPACA_RESPONSE_MARKER, also for the chat template, as Cherry uses one
    fixed marker for every prompt style). The response is cut where the conditioned pass cuts it;
    Cherry skips such samples instead.
    """
    start = start_token_id(ctx.tokenizer)
    marker = ctx.tokenizer(ALPACA_RESPONSE_MARKER, add_special_tokens=False).input_ids
    pairs = _pairs(rows, ctx)
    uncond = [([start, *marker, *p.response_ids], [IGNORE_INDEX] * (1 + len(marker)) + list(p.response_ids))
              for p in pairs]
    losses = _nll(ctx, [p.conditioned(start) for p in pairs] + uncond)
    cond, unc = losses[: len(pairs)], losses[len(pairs) :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = np.where(unc > 0, cond / unc, np.nan)
    return IFDScores(ifd=ifd, loss_conditioned=cond, loss_unconditioned=unc)


class IFDScorer:
    """Cherry_LLM's IFD = L(resp | instr) / L(resp). Cherry selects HIGH IFD among IFD ≤ 1 (hard
    but aligned samples); for filtering noisy data we keep LOW IFD (the instruction helps most),
    so keep-score = −IFD and the IFD > 1 rows (flagged misaligned by Cherry) rank below all
    others. Cost: 2 forward passes per sample."""

    name = "ifd"
    direction = "lower raw IFD is better for noise filtering (IFD > 1 = misaligned); keep-score = -IFD"
    cost = "2 forward passes per sample (conditioned + marker-only)"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return -ifd_scores(rows, ctx).ifd
