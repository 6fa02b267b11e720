"""Per-sample mean token NLL over labelled positions, batched with minimal padding.

All public IRA/IFD code scores one sample at a time; here samples are sorted by length and
padded per batch, and the LM head runs only at labelled positions (on a small model the
vocabulary projection costs more than the transformer), so the result is identical to a
one-by-one loop up to float rounding. Batches are right-padded, so causal masking alone keeps
every real token from seeing the padding after it: no padding mask is built, and attention
takes its causal fast path. `compute_dtype` (e.g. bfloat16) runs the matrix products in lower
precision under autocast; the NLL itself is always taken in float32. Models whose forward scales
the head's output (Cohere, Granite) get the same scale here; softcapped or otherwise transformed
logits (Gemma 2/3, muP multipliers) come from the model's own full forward instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from feddqc_flwr.llm.batching import pad_sequences
from feddqc_flwr.llm.precision import compute_precision
from feddqc_flwr.llm.prompts import IGNORE_INDEX

_HEAD_CHUNK = 128  # labelled positions projected to the vocabulary at once (cache-sized logits)

Head = Callable[[torch.Tensor], torch.Tensor]

# Model types whose forward scales the LM head's output by a config value, as their modeling code
# in transformers does: model_type -> (config attribute, divides). The head-only path must too.
_LOGIT_SCALES: dict[str, tuple[str, bool]] = {
    **dict.fromkeys(("cohere", "cohere2", "cohere2_moe"), ("logit_scale", False)),  # logits * logit_scale
    **dict.fromkeys(("granite", "granite_swa", "granitemoe", "granitemoe_swa", "granitemoeshared",
                     "granitemoehybrid"), ("logits_scaling", True)),  # logits / logits_scaling
    "hyperclovax": ("logits_scaling", False),  # the same key multiplies here
}
# Config keys that change the logits in other models (softcapping, muP multipliers): there only the
# model's own forward is exact, and it runs at every position.
_LOGIT_KEYS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier",
               "output_multiplier", "logits_mup_width_multiplier", "dim_model_base")


def logit_scale(config: object) -> tuple[float, bool] | None:
    """(factor, divides) that turns the LM head's output into the model's logits.

    None when the head-only path cannot reproduce the model's logits (run the full forward).
    """
    if getattr(config, "final_logit_softcapping", None):
        return None
    known = _LOGIT_SCALES.get(str(getattr(config, "model_type", "")))
    if known is not None:
        value = getattr(config, known[0], None)
        return (1.0 if value is None else float(value)), known[1]
    if any(getattr(config, key, None) is not None for key in _LOGIT_KEYS):
        return None
    return 1.0, False


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a PeftModel (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_head(model: torch.nn.Module, dtype: torch.dtype) -> Head:
    """The LM head computing in `dtype`: its weight is cast once here, not at every call."""
    head = causal_lm(model).get_output_embeddings()
    if dtype == torch.float32 or head.weight.dtype == dtype:
        return head
    weight = head.weight.detach().to(dtype)
    bias = None if head.bias is None else head.bias.detach().to(dtype)
    return lambda states: torch.nn.functional.linear(states.to(dtype), weight, bias)


def position_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor | None,
                 labels: torch.Tensor, head: Head | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 NLL of each labelled token and the batch row it belongs to.

    `attention = None` is for right-padded batches (see the module docstring).
    """
    lm = causal_lm(model)
    targets = labels[:, 1:]
    rows, cols = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
    scale = logit_scale(lm.config)
    if scale is None:
        logits = lm(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1]
        picked = logits[rows, cols].float()
        return torch.nn.functional.cross_entropy(picked, targets[rows, cols], reduction="none"), rows
    factor, divides = scale
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
    states, wanted = hidden[:, :-1][rows, cols], targets[rows, cols]
    head = head or lm.get_output_embeddings()

    def logits(chunk: torch.Tensor) -> torch.Tensor:
        out = head(chunk)
        if factor != 1.0:
            out = out / factor if divides else out * factor
        return out.float()

    parts = [torch.nn.functional.cross_entropy(logits(states[i : i + _HEAD_CHUNK]),
                                               wanted[i : i + _HEAD_CHUNK], reduction="none")
             for i in range(0, len(states), _HEAD_CHUNK)]
    return (torch.cat(parts) if parts else states.new_zeros(0, dtype=torch.float32)), rows


def nll_totals(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed NLL over each sequence's labelled tokens, how many tokens that is, and the NLL of
    the last labelled token (NaN where none is labelled).

    `sequences` holds (input_ids, labels) pairs with IGNORE_INDEX on unlabelled positions.
    The sum is what the FedDQC paper's L is (§3.2); the mean (`mean_nll`) is what its code uses.
    The last labelled token is the EOS after the response where the response fit (`encode_pair`).
    """
    sums, counts = np.zeros(len(sequences)), np.zeros(len(sequences), dtype=np.int64)
    last = np.full(len(sequences), np.nan)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(order), desc="scoring", unit="seq", disable=None, leave=False)
    with torch.inference_mode(), compute_precision(device, compute_dtype):
        head = output_head(model, compute_dtype)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, _, labels = pad_sequences([sequences[i] for i in idx], pad_id)
            nll, rows = position_nll(model, ids.to(device), None, labels.to(device), head)
            batch_sums = torch.zeros(len(idx), dtype=torch.float64).index_add_(0, rows.cpu(), nll.double().cpu())
            batch_counts = torch.bincount(rows.cpu(), minlength=len(idx))
            sums[idx], counts[idx] = batch_sums.numpy(), batch_counts.numpy()
            # labelled positions come row by row, left to right: a row's last one ends its run
            ends = torch.cumsum(batch_counts, 0) - 1
            has = (batch_counts > 0).numpy()
            last[np.asarray(idx)[has]] = nll.double().cpu()[ends[batch_counts > 0]].numpy()
            progress.update(len(idx))
    progress.close()
    model.train(was_training)
    return sums, counts, last


def mean_nll(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    compute_dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Mean NLL over each sequence's labelled tokens; NaN where a sequence has none."""
    sums, counts, _ = nll_totals(model, sequences, pad_id, batch_size, device, compute_dtype)
    return per_token(sums, counts)


def per_token(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sums / counts, NaN where there is no token."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
