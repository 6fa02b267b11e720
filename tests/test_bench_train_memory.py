"""`feddqc bench train-memory` measures the app's training on the rows it is given: its reported
loss is the completion-only loss of that batch, computed here by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feddqc_flwr.bench.train_memory import train_step_peak
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from tests.scoring.common import ROWS

PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n")
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n")
MAX_LENGTH = 128


def _response_nll(model, tok, row: dict) -> list[float]:
    """NLL of each response token (and EOS) after BOS + Alpaca prompt: one plain full-logits forward."""
    head = PROMPT_WITH_INPUT.format(**row) if row["input"] else PROMPT.format(**row)
    prompt = tok(head, add_special_tokens=False).input_ids + tok("### Response:\n", add_special_tokens=False).input_ids
    response = tok(row["response"], add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = [tok.bos_token_id, *prompt, *response]
    assert len(ids) <= MAX_LENGTH  # nothing cut: the hand computation sees the whole row
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return [-logp[t - 1, ids[t]].item() for t in range(1 + len(prompt), len(ids))]


def test_train_step_peak_reports_the_loss_of_the_batch_it_trained_on(tiny_model_dir: Path) -> None:
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8,
                                         lora_dropout=0.0))  # no dropout: the training forward is deterministic
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a non-zero adapter: the loss must be the adapted model's, not the base model's
        for name, p in bundle.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    start = {k: v.clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    bundle.model.eval()
    per_row = [_response_nll(bundle.model, bundle.tokenizer, row) for row in ROWS]
    token_mean = float(np.mean([x for row in per_row for x in row]))  # HF: over all labelled tokens of the batch
    row_mean = float(np.mean([np.mean(row) for row in per_row]))
    assert abs(token_mean - row_mean) > 1e-3  # the rows' lengths differ, so the two readings are told apart

    # one step of one batch holding every row: the reported loss is that batch's loss before the update
    out = train_step_peak(bundle, ROWS, batch_size=len(ROWS), steps=1, max_length=MAX_LENGTH)
    trained = {k: v for k, v in bundle.model.state_dict().items() if "lora_" in k}
    moved = any(not torch.equal(start[k], trained[k]) for k in start)
    bundle.model.load_state_dict(start, strict=False)  # leave the cached bundle as found

    assert out["train_loss"] == pytest.approx(token_mean, rel=1e-5)
    assert moved  # it really trained
    assert out["peak_rss_mib_after_training"] >= out["peak_rss_mib_before_training"] > 0
    assert out["step_seconds"] > 0
