"""Likelihood scorers: IRA (mean and sum), response loss, perplexity and IFD.

Each names the forward passes it needs (`scoring.passes`) and derives its keep-score from them
in `from_passes`, so `feddqc bench selection` can run the passes once and derive every scorer
through the same code. All passes score the same response tokens with the same start token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.ira import IRA_PASSES, ira_from_passes
from feddqc_flwr.scoring.passes import LikelihoodPasses, likelihood_passes


def conditioned_loss(rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
    """L(response | instruction): mean NLL of the response tokens after the training prompt."""
    return likelihood_passes(rows, ctx, ("conditioned",))["conditioned"].mean


class PassScorer:
    """A scorer made of likelihood passes: run them, then derive the keep-score."""

    passes: tuple[str, ...] = ()

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        raise NotImplementedError

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        return self.from_passes(likelihood_passes(rows, ctx, self.passes))


class IRAScorer(PassScorer):
    """FedDQC's IRA = L(response) − L(response | instruction); high = instruction explains the
    response = clean. Keep-score = IRA unchanged. Cost: 2 forward passes per sample in both forms.

    `ira` takes L as the MEAN token NLL, as the authors' code computes it; `ira-sum` takes the
    SUMMED token NLL, as the paper's §3.2 writes it: log p(y|x) − log p(y), the pointwise mutual
    information of instruction and response in nats (it grows with the response length)."""

    cost = "2 forward passes per sample (conditioned + response alone)"
    passes = IRA_PASSES

    def __init__(self, reduction: str = "mean", baseline: str = "unconditioned") -> None:
        self.reduction, self.baseline = reduction, baseline
        self.name = ("ira" if reduction == "mean" else f"ira-{reduction}") + \
            ("" if baseline == "unconditioned" else f"-{baseline}")
        self.passes = ("conditioned", baseline)
        self.direction = f"higher raw IRA is better; keep-score = IRA ({reduction} token NLL form)"

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return ira_from_passes(passes, self.reduction, self.baseline).ira


class LossScorer(PassScorer):
    """Response loss given the instruction (our training loss); low loss = fits the model's view
    of good data. Keep-score = −loss. Cost: 1 forward pass per sample."""

    name = "loss"
    direction = "lower raw loss is better; keep-score = -loss"
    cost = "1 forward pass per sample"
    passes = ("conditioned",)

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return -passes["conditioned"].mean


class PerplexityScorer(PassScorer):
    """Response perplexity given the instruction, exp(L(response | instruction)); low = good.
    Keep-score = −ppl (same ranking as `loss`, kept as the baseline papers report).
    Cost: 1 forward pass per sample."""

    name = "ppl"
    direction = "lower raw perplexity is better; keep-score = -ppl"
    cost = "1 forward pass per sample"
    passes = ("conditioned",)

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return -np.exp(passes["conditioned"].mean)


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


def ifd_from_passes(passes: LikelihoodPasses) -> IFDScores:
    """IFD = L(response | instruction) / L(response | '### Response:') as in Cherry_LLM."""
    cond, unc = passes["conditioned"].mean, passes["marker"].mean
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = np.where(unc > 0, cond / unc, np.nan)
    return IFDScores(ifd=ifd, loss_conditioned=cond, loss_unconditioned=unc)


def ifd_scores(rows: Sequence[Row], ctx: ScoringContext) -> IFDScores:
    """IFD of rows. Cherry's unconditioned pass is not the bare response: it keeps the response
    marker (the `marker` pass). The response is cut where the conditioned pass cuts it; Cherry
    skips such samples instead."""
    return ifd_from_passes(likelihood_passes(rows, ctx, ("conditioned", "marker")))


class IFDScorer(PassScorer):
    """Cherry_LLM's IFD = L(resp | instr) / L(resp). Cherry selects HIGH IFD among IFD ≤ 1 (hard
    but aligned samples); for filtering noisy data we keep LOW IFD (the instruction helps most),
    so keep-score = −IFD and the IFD > 1 rows (flagged misaligned by Cherry) rank below all
    others. Cost: 2 forward passes per sample."""

    name = "ifd"
    direction = "lower raw IFD is better for noise filtering (IFD > 1 = misaligned); keep-score = -IFD"
    cost = "2 forward passes per sample (conditioned + marker-only)"
    passes = ("conditioned", "marker")

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return -ifd_from_passes(passes).ifd


class EOSScorer(PassScorer):
    """How likely the model finds the answer to end where it ends: the NLL of the EOS token after
    the response, given the instruction; low = a complete answer. A cut answer stops mid-sentence.
    Keep-score = -NLL(EOS); a response cut by max-length has no EOS and is not judged by this
    criterion (keep-score 0, the best). Cost: the conditioned pass (shared with `loss`)."""

    name = "eos"
    direction = "lower raw EOS NLL is better; keep-score = -NLL(EOS | instruction, response)"
    cost = "1 forward pass per sample (the conditioned one)"
    passes = ("conditioned",)

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return -np.nan_to_num(passes["conditioned"].eos, nan=0.0)


class ContrastScorer(PassScorer):
    """How much more likely the response is after its own instruction than after other rows' of
    the same client: mean over `CONTRAST_PARTNERS` partners of L(y | x_j) − L(y | x_i), summed token
    NLL (nats). An answer to another question (swap) is about as likely after any instruction.
    IRA's baseline is the response alone; here it is the response after a real, unrelated prompt,
    so what every instruction explains (format, the template) cancels. Keep-score = the contrast.
    Cost: 1 + CONTRAST_PARTNERS forward passes per sample (the conditioned one shared)."""

    name = "contrast"
    direction = "higher raw contrast is better; keep-score = mean_j L(y|x_j) - L(y|x_i) (summed token NLL)"
    cost = "1 + 2 forward passes per sample (conditioned + the response after 2 other rows' prompts)"
    passes = ("conditioned", "contrast")

    def from_passes(self, passes: LikelihoodPasses) -> np.ndarray:
        return passes["contrast"].total - passes["conditioned"].total
