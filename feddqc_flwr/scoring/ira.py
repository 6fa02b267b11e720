"""IRA: instruction-response alignment, IRA = L(response) - L(response | instruction).

L is taken over the response tokens (EOS included when the response fit), in one of two forms:
- `mean` (the authors' code): mean token NLL, so IRA is the per-token gain from the instruction;
- `sum` (the paper's §3.2 as written): summed token NLL, so IRA is the pointwise mutual
  information log p(y|x) - log p(y) between instruction and response, in nats. Long answers
  that the instruction explains collect more of it than short ones.
The unconditioned pass sees the response alone after the start token (FedDQC's convention); the
conditioned pass sees the training prompt first. High IRA = the instruction explains the
response = clean and easy. Both forms cost the same two forward passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.passes import LikelihoodPasses, likelihood_passes

REDUCTIONS = ("mean", "sum")
IRA_PASSES = ("conditioned", "unconditioned")


@dataclass(frozen=True)
class IRAScores:
    """Per-sample IRA and the two losses it is made of (NaN = could not be scored)."""

    ira: np.ndarray
    loss_conditioned: np.ndarray
    loss_unconditioned: np.ndarray


def ira_from_passes(passes: LikelihoodPasses, reduction: str = "mean", baseline: str = "unconditioned") -> IRAScores:
    """IRA in the given form from the conditioned pass and the `baseline` pass (L(response):
    `unconditioned` = the response alone, FedDQC's convention)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"IRA reduction {reduction!r}: allowed values are {', '.join(REDUCTIONS)}")
    cond, uncond = passes["conditioned"], passes[baseline]
    lc, lu = (cond.mean, uncond.mean) if reduction == "mean" else (cond.total, uncond.total)
    return IRAScores(ira=lu - lc, loss_conditioned=lc, loss_unconditioned=lu)


def ira_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    template: str,
    max_length: int,
    batch_size: int,
    device: torch.device,
    compute_dtype: torch.dtype = torch.float32,
    reduction: str = "mean",
) -> IRAScores:
    """Score rows with the model as it is now (the current global adapter)."""
    ctx = ScoringContext(model=model, tokenizer=tokenizer, template=template, max_length=max_length,
                         batch_size=batch_size, device=device, compute_dtype=compute_dtype)
    return ira_from_passes(likelihood_passes(rows, ctx, IRA_PASSES), reduction)
