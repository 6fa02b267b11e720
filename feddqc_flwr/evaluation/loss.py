"""Held-out loss of the current adapter: mean over samples of the response NLL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.nll import mean_nll


def response_nll(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, template: str,
                 max_length: int, batch_size: int) -> np.ndarray:
    """Mean response-token NLL of each row given its prompt, as training measures it."""
    start = start_token_id(bundle.tokenizer)
    sequences = [encode_pair(r, bundle.tokenizer, template, max_length).conditioned(start) for r in rows]
    return np.asarray(mean_nll(bundle.model, sequences, int(bundle.tokenizer.pad_token_id), batch_size,
                               bundle.device), dtype=np.float64)


def heldout_loss(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, template: str,
                 max_length: int, batch_size: int) -> float:
    """Completion-only loss on `rows` (NaN when there are none)."""
    if not rows:
        return float("nan")
    return float(np.nanmean(response_nll(bundle, rows, template=template, max_length=max_length,
                                         batch_size=batch_size)))
