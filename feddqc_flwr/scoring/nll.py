"""Per-sample mean token NLL over labelled positions, batched with minimal padding.

All public IRA/IFD code scores one sample at a time; here samples are sorted by length and
padded per batch, and the LM head runs only at labelled positions (on a small model the
vocabulary projection costs more than the transformer), so the result is identical to a
one-by-one loop up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from feddqc_flwr.batching import pad_sequences
from feddqc_flwr.prompts import IGNORE_INDEX

_HEAD_CHUNK = 2048  # labelled positions projected to the vocabulary at once


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a PeftModel (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def position_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL of each labelled token and the batch row it belongs to."""
    lm = causal_lm(model)
    targets = labels[:, 1:]
    rows, cols = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
    if getattr(lm.config, "final_logit_softcapping", None):
        logits = lm(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
        picked = logits[rows, cols].float()
    else:
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
        states = hidden[:, :-1][rows, cols]
        head = lm.get_output_embeddings()
        picked = torch.cat([head(states[i : i + _HEAD_CHUNK]).float()
                            for i in range(0, len(states), _HEAD_CHUNK)]) if len(states) else states.float()
    nll = torch.nn.functional.cross_entropy(picked, targets[rows, cols], reduction="none")
    return nll, rows


def mean_nll(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Mean NLL over each sequence's labelled tokens; NaN where a sequence has none.

    `sequences` holds (input_ids, labels) pairs with IGNORE_INDEX on unlabelled positions.
    """
    out = np.full(len(sequences), np.nan)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(order), desc="scoring", unit="seq", disable=None, leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, attention, labels = pad_sequences([sequences[i] for i in idx], pad_id)
            nll, rows = position_nll(model, ids.to(device), attention.to(device), labels.to(device))
            sums = torch.zeros(len(idx), dtype=torch.float64).index_add_(0, rows.cpu(), nll.double().cpu())
            counts = torch.bincount(rows.cpu(), minlength=len(idx))
            for row, i in enumerate(idx):
                if counts[row] > 0:
                    out[i] = float(sums[row] / counts[row])
            progress.update(len(idx))
    progress.close()
    model.train(was_training)
    return out
