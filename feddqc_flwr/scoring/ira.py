"""IRA: instruction-response alignment, IRA = L(response) - L(response | instruction).

Both losses are mean token NLLs over the response tokens including EOS. The unconditioned pass
sees the response alone after the start token (FedDQC's convention); the conditioned pass sees
the training prompt first. High IRA = the instruction explains the response = clean and easy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from feddqc_flwr.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.nll import mean_nll


@dataclass(frozen=True)
class IRAScores:
    """Per-sample IRA and the two losses it is made of (NaN = could not be scored)."""

    ira: np.ndarray
    loss_conditioned: np.ndarray
    loss_unconditioned: np.ndarray


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
) -> IRAScores:
    """Score rows with the model as it is now (the current global adapter)."""
    start = start_token_id(tokenizer)
    pairs = [encode_pair(row, tokenizer, template, max_length) for row in rows]
    # Both passes in one length-sorted stream: short unconditioned sequences batch together.
    sequences = [p.conditioned(start) for p in pairs] + [p.unconditioned(start) for p in pairs]
    losses = mean_nll(model, sequences, int(tokenizer.pad_token_id), batch_size, device, compute_dtype)
    cond, uncond = losses[: len(pairs)], losses[len(pairs) :]
    return IRAScores(ira=uncond - cond, loss_conditioned=cond, loss_unconditioned=uncond)
