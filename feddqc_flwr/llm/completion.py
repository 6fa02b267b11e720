"""Batched completions of token-id prompts, shared by answer generation (evaluation) and DS2's
local rater: left padding (so every prompt ends where generation starts), eval mode without
gradients, and only the new tokens decoded. The model's train/eval mode is restored afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase


def complete(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, **generate_kwargs: Any) -> list[str]:
    """One decoded completion (special tokens dropped) per prompt, generated as one batch."""
    pad_id = int(tokenizer.pad_token_id)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        attention[row, width - len(prompt):] = 1
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device),
                                 max_new_tokens=max_new_tokens, pad_token_id=pad_id, **generate_kwargs)
    finally:
        model.train(was_training)
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
