"""The forward passes the likelihood scorers are made of, each run once per row.

IRA, IRA-sum, loss, perplexity, IFD and their combinations differ only in what precedes the
response and how the token NLLs are reduced, so a scorer names the passes it needs and derives
its score from them. `feddqc bench selection` runs every pass once and derives every scorer
from the same numbers, through the same functions the scorers use.

- conditioned: [start] + training prompt + response, response tokens labelled;
- unconditioned: [start] + response (FedDQC's L(response));
- marker: [start] + response marker + response (Cherry_LLM's IFD denominator).
Every pass labels the same response tokens (`encode_pair`: EOS only if the response fit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feddqc_flwr.llm.prompts import ALPACA_RESPONSE_MARKER, IGNORE_INDEX, EncodedPair, encode_pair, start_token_id
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.nll import nll_totals, per_token

PASSES = ("conditioned", "unconditioned", "marker")


@dataclass(frozen=True)
class ResponseNLL:
    """Summed NLL over each row's response tokens and the number of those tokens."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Mean token NLL (the authors' code's L); NaN where no token was scored."""
        return per_token(self.sums, self.counts)

    @property
    def total(self) -> np.ndarray:
        """Summed token NLL (the paper's L, §3.2); NaN where no token was scored."""
        return np.where(self.counts > 0, self.sums, np.nan)


@dataclass
class LikelihoodPasses:
    """The passes one scoring call ran, and how long each took."""

    nll: dict[str, ResponseNLL]
    seconds: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ResponseNLL:
        return self.nll[name]


def _sequences(name: str, pairs: list[EncodedPair], start: int, marker: list[int]) -> list[tuple[list[int],
                                                                                              list[int]]]:
    if name == "conditioned":
        return [p.conditioned(start) for p in pairs]
    if name == "unconditioned":
        return [p.unconditioned(start) for p in pairs]
    return [([start, *marker, *p.response_ids], [IGNORE_INDEX] * (1 + len(marker)) + list(p.response_ids))
            for p in pairs]


def likelihood_passes(rows: Sequence[Row], ctx: ScoringContext, needed: Sequence[str]) -> LikelihoodPasses:
    """Run the `needed` passes over `rows` with the model as it is now."""
    unknown = set(needed) - set(PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}: known are {', '.join(PASSES)}")
    tok = ctx.tokenizer
    start = start_token_id(tok)
    pairs = [encode_pair(row, tok, ctx.template, ctx.max_length) for row in rows]
    # Cherry_LLM uses one fixed marker for every prompt style; so do we, also for the chat template.
    marker = tok(ALPACA_RESPONSE_MARKER, add_special_tokens=False).input_ids
    out = LikelihoodPasses(nll={})
    for name in PASSES:
        if name not in needed:
            continue
        started = time.perf_counter()
        sums, counts = nll_totals(ctx.model, _sequences(name, pairs, start, marker), int(tok.pad_token_id),
                                  ctx.batch_size, ctx.device, ctx.compute_dtype)
        out.nll[name] = ResponseNLL(sums, counts)
        out.seconds[name] = time.perf_counter() - started
    return out
