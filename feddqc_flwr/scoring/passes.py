"""The forward passes the likelihood scorers are made of, each run once per row.

IRA, IRA-sum, loss, perplexity, IFD and their combinations differ only in what precedes the
response and how the token NLLs are reduced, so a scorer names the passes it needs and derives
its score from them. `feddqc bench selection` runs every pass once and derives every scorer
from the same numbers, through the same functions the scorers use.

- conditioned: [start] + training prompt + response, response tokens labelled;
- unconditioned: [start] + response (FedDQC's L(response));
- marker: [start] + response marker + response (Cherry_LLM's IFD denominator);
- template: [start] + training prompt with the instruction (and input) left empty + response;
- contrast: the conditioned pass of the row's response after the prompts of `CONTRAST_PARTNERS`
  other rows of the same call (a local "answer to another question" baseline).
Every pass labels the same response tokens (`encode_pair`: EOS only if the response fit), and
keeps the NLL of the EOS token where there is one (`ResponseNLL.eos`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feddqc_flwr.llm.prompts import ALPACA_RESPONSE_MARKER, IGNORE_INDEX, EncodedPair, encode_pair, start_token_id
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.nll import nll_totals, per_token

ROW_PASSES = ("conditioned", "unconditioned", "marker", "template")  # each depends on its own row only
PASSES = (*ROW_PASSES, "contrast")
CONTRAST_PARTNERS = 2  # other rows' prompts each response is scored after in the contrast pass
CONTRAST_SEED = 0  # the fixed permutation that pairs rows with partners (same rows -> same partners)


@dataclass(frozen=True)
class ResponseNLL:
    """Summed NLL over each row's response tokens, the number of those tokens, and the NLL of the
    EOS token after the response (NaN where the response was cut by max-length and has none)."""

    sums: np.ndarray
    counts: np.ndarray
    eos: np.ndarray

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


def _sequences(name: str, pairs: list[EncodedPair], rows: Sequence[Row], ctx: ScoringContext,
               start: int) -> list[tuple[list[int], list[int]]]:
    if name == "conditioned":
        return [p.conditioned(start) for p in pairs]
    if name == "unconditioned":
        return [p.unconditioned(start) for p in pairs]
    if name == "marker":
        # Cherry_LLM uses one fixed marker for every prompt style; so do we, also for the chat template.
        prefixes = [ctx.tokenizer(ALPACA_RESPONSE_MARKER, add_special_tokens=False).input_ids] * len(pairs)
    else:  # template: the same prompt with nothing in it (its response tokens are the conditioned ones)
        prefixes = [encode_pair({**row, "instruction": "", "input": ""}, ctx.tokenizer, ctx.template,
                                ctx.max_length).prompt_ids for row in rows]
    return [([start, *prefix, *p.response_ids], [IGNORE_INDEX] * (1 + len(prefix)) + list(p.response_ids))
            for p, prefix in zip(pairs, prefixes, strict=True)]


def row_passes(rows: Sequence[Row], ctx: ScoringContext, needed: Sequence[str]) -> LikelihoodPasses:
    """Run the `needed` passes of ROW_PASSES over `rows` with the model as it is now."""
    tok = ctx.tokenizer
    start = start_token_id(tok)
    pairs = [encode_pair(row, tok, ctx.template, ctx.max_length) for row in rows]
    complete = np.array([p.complete for p in pairs], dtype=bool)
    out = LikelihoodPasses(nll={})
    for name in ROW_PASSES:
        if name not in needed:
            continue
        started = time.perf_counter()
        sums, counts, last = nll_totals(ctx.model, _sequences(name, pairs, rows, ctx, start), int(tok.pad_token_id),
                                        ctx.batch_size, ctx.device, ctx.compute_dtype)
        out.nll[name] = ResponseNLL(sums, counts, np.where(complete & (counts > 0), last, np.nan))
        out.seconds[name] = time.perf_counter() - started
    return out


def contrast_partners(n: int, k: int = CONTRAST_PARTNERS) -> np.ndarray:
    """(n, min(k, n-1)) indices of the rows whose prompts row i's response is scored after: the
    next rows in a fixed random order, so neighbours in the data (same topic) are not favoured."""
    k = max(0, min(k, n - 1))
    order = np.random.default_rng(CONTRAST_SEED).permutation(n)
    partners = np.empty((n, k), dtype=np.int64)
    for pos, i in enumerate(order):
        partners[i] = [order[(pos + d) % n] for d in range(1, k + 1)]
    return partners


def contrast_rows(rows: Sequence[Row]) -> list[Row]:
    """Row i's response under each partner's prompt (instruction, input, history), row-major."""
    return [{**rows[j], "response": rows[i]["response"]}
            for i, js in enumerate(contrast_partners(len(rows))) for j in js]


def contrast_nll(own: ResponseNLL, partners: ResponseNLL) -> ResponseNLL:
    """The contrast pass from the conditioned passes of the rows and of `contrast_rows`: the mean
    per-token NLL over the partners, scaled to the row's own response tokens (a long partner prompt
    can cut the response shorter); NaN where a row has no partner."""
    n = len(own.counts)
    k = len(partners.counts) // n if n else 0
    if k == 0:
        return ResponseNLL(np.full(n, np.nan), own.counts, np.full(n, np.nan))
    per_token_mean = partners.mean.reshape(n, k).mean(axis=1)
    return ResponseNLL(per_token_mean * own.counts, own.counts, partners.eos.reshape(n, k).mean(axis=1))


def likelihood_passes(rows: Sequence[Row], ctx: ScoringContext, needed: Sequence[str]) -> LikelihoodPasses:
    """Run the `needed` passes over `rows` with the model as it is now."""
    unknown = set(needed) - set(PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}: known are {', '.join(PASSES)}")
    contrast = "contrast" in needed
    out = row_passes(rows, ctx, [*needed, *(["conditioned"] if contrast else [])])
    if contrast:
        partners = row_passes(contrast_rows(rows), ctx, ("conditioned",))
        out.nll["contrast"] = contrast_nll(out["conditioned"], partners["conditioned"])
        out.seconds["contrast"] = partners.seconds["conditioned"]
    return out
