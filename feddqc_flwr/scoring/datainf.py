"""DataInf (Kwon et al.): closed-form influence of each sample on the validation loss via the LoRA
gradients, treating every lora_A and lora_B matrix as one layer l.

    λ_l  = 0.1 · mean_i(‖g_il‖² / d_l)
    h_l  = 1/(n λ_l) · Σ_i [v_l − (v_l·g_il)/(λ_l + ‖g_il‖²) · g_il]    ≈ (G_l + λ_l I)⁻¹ v_l
    IF(k) = −Σ_l ⟨h_l, g_kl⟩

g_il = gradient of sample i's loss, v_l = mean validation gradient. The loss is our training loss
(mean NLL of the response tokens); the original uses the full-text loss (labels = input_ids).
Per-sample gradients come from one batched backward: a LoRA matrix's gradient for sample i is
Σ_t δ_it x_itᵀ, with x its input and δ the gradient at its output (padding gets δ = 0). Dropout
is off (eval mode), so the gradients are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from feddqc_flwr.llm.batching import pad_sequences
from feddqc_flwr.llm.precision import compute_precision
from feddqc_flwr.llm.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.nll import output_head, position_nll

_DAMPING = 0.1  # DataInf's lambda_const_param = 10


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The trainable lora_A / lora_B linear maps, by module name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.weight.requires_grad
            and (".lora_A." in name or ".lora_B." in name)}


def per_sample_lora_grads(rows: Sequence[Row], ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """Per LoRA matrix, an (n, d_l) float32 CPU tensor of per-sample loss gradients."""
    model, tok = ctx.model, ctx.tokenizer
    layers = lora_layers(model)
    if not layers:
        raise ValueError("datainf needs a model with a trainable LoRA adapter")
    start = start_token_id(tok)
    sequences = [encode_pair(r, tok, ctx.template, ctx.max_length).conditioned(start) for r in rows]
    grads = {name: torch.zeros(len(rows), m.weight.numel()) for name, m in layers.items()}
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def capture(_module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            captured[name] = (inputs[0].detach(), output)
        return capture

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    order = sorted(range(len(rows)), key=lambda i: len(sequences[i][0]))
    was_training = model.training
    model.eval()
    try:
        head = output_head(model, ctx.compute_dtype)
        with torch.enable_grad():
            for first in range(0, len(order), ctx.batch_size):
                idx = order[first : first + ctx.batch_size]
                ids, _, labels = (t.to(ctx.device) for t in
                                  pad_sequences([sequences[i] for i in idx], int(tok.pad_token_id)))
                captured.clear()
                with compute_precision(ctx.device, ctx.compute_dtype):  # the forward only: the products below stay fp32
                    nll, owner = position_nll(model, ids, None, labels, head)  # right-padded: causal mask suffices
                counts = torch.bincount(owner, minlength=len(idx)).to(nll.dtype)
                loss = (nll / counts[owner]).sum()  # sum of per-sample mean losses
                names = list(captured)
                deltas = torch.autograd.grad(loss, [captured[n][1] for n in names], allow_unused=True)
                for name, delta in zip(names, deltas, strict=True):
                    if delta is not None:
                        x = captured[name][0]
                        g = torch.einsum("bto,bti->boi", delta.float(), x.float()).reshape(len(idx), -1)
                        grads[name][idx] = g.cpu()
    finally:
        for h in handles:
            h.remove()
        captured.clear()
        model.train(was_training)
    return grads


def datainf_influence(train: dict[str, torch.Tensor], validation: dict[str, torch.Tensor]) -> np.ndarray:
    """IF(k) for each training row from per-sample train and validation gradients.

    A layer whose training gradients are all zero (λ_l = 0, e.g. lora_A while lora_B is still
    zero-initialised) adds nothing to any IF(k) and is skipped.
    """
    n = next(iter(train.values())).shape[0]
    influence = torch.zeros(n, dtype=torch.float64)
    for name, g in train.items():
        g = g.double()
        v = validation[name].double().mean(0)
        sq = (g * g).sum(1)
        lam = _DAMPING * (sq / g.shape[1]).mean()
        if lam == 0:
            continue
        coef = (g @ v) / (lam + sq)
        h = (n * v - coef @ g) / (n * lam)
        influence -= g @ h
    return influence.numpy()


class DataInfScorer:
    """DataInf influence on the validation loss of `ctx.reference_rows` (clean validation rows).

    Large positive IF = upweighting the sample raises validation loss = harmful; keep-score = −IF.
    Cost: 1 forward + 1 backward per sample and per validation row; memory n × (LoRA params)
    floats, as all per-sample gradients are held (DataInf does the same).
    """

    name = "datainf"
    direction = "lower raw influence is better (positive = harmful); keep-score = -IF"
    cost = "1 forward + 1 backward per sample and per validation row; n x LoRA-params floats of memory"

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        if not ctx.reference_rows:
            raise ValueError("datainf needs validation rows in ScoringContext.reference_rows")
        if not rows:
            return np.zeros(0)
        train = per_sample_lora_grads(rows, ctx)
        validation = per_sample_lora_grads(ctx.reference_rows, ctx)
        return -datainf_influence(train, validation)
