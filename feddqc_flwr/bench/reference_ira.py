"""IRA exactly as the authors' public FedDQC code computes it: a reference that shares nothing
with the app's tokenization (`llm.prompts`), for `feddqc bench scoring`.

From UnknownBeauty/FedDQC `selection/conpro.py` (`filter_by_ConPro`, read at c9d1f49) and
`utils/process_dataset.py::alpaca_format`:
- the instruction gets a non-empty `input` appended after one space;
- conditioned text: one string, the long Alpaca header (the "paired with an input" wording for
  every row) + "### Instruction:\\n{instruction}\\n\\n### Response: {response}" (a space, no
  newline, after "Response:"), tokenized whole by the tokenizer's own call (its BOS, if it adds
  one), truncated at `cutoff_len`, EOS appended only when the ids do not already end in EOS and
  are shorter than `cutoff_len`;
- labels: the first len(tokenize(prompt ending "### Response: ")) - 1 positions are -100 (the
  prompt alone also got an EOS, hence the -1). Where the trailing space merges into the first
  response word in the joint string, that word's token is masked too: the authors' behaviour;
- unconditioned text: the raw response, tokenized the same way, every position labelled;
- each loss is HF's `outputs.loss` (mean NLL over labelled, shifted positions), batch 1;
  IRA = L(unconditioned) - L(conditioned).
The app differs on purpose (a separately tokenized "### Response:\\n" marker, a start token
before every pass, no masked response token, the same header as training), so this measures
how far the app's IRA is from the authors' on the same rows, not whether batching is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from feddqc_flwr.llm.precision import compute_precision

HEADER = ("Below is an instruction that describes a task, paired with an input that provides further context. "
          "Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n### Response: ")
IGNORE = -100


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str, cutoff_len: int) -> list[int]:
    """The authors' `tokenize`: truncate, then EOS only if missing and there is room."""
    ids = list(tokenizer(text, truncation=True, max_length=cutoff_len, padding=False).input_ids)
    if (not ids or ids[-1] != tokenizer.eos_token_id) and len(ids) < cutoff_len:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def authors_encoding(row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase,
                     cutoff_len: int) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """((ids, labels) conditioned, (ids, labels) unconditioned) of one row, as the authors build them."""
    instruction = f"{row['instruction']} {row['input']}" if row.get("input") else row["instruction"]
    prompt = HEADER.format(instruction)
    full = _tokenize(tokenizer, prompt + row["response"], cutoff_len)
    masked = len(_tokenize(tokenizer, prompt, cutoff_len)) - 1
    conditioned = (full, [IGNORE] * masked + full[masked:])
    response = _tokenize(tokenizer, row["response"], cutoff_len)
    return conditioned, (response, list(response))


def authors_ira(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, Any]],
                cutoff_len: int, device: torch.device, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """IRA per row from the authors' one-sample loop (NaN where a pass has no labelled token)."""
    out = []
    model.eval()
    with torch.inference_mode(), compute_precision(device, dtype):
        for row in rows:
            losses = []
            for ids, labels in authors_encoding(row, tokenizer, cutoff_len):
                result = model(input_ids=torch.tensor([ids], device=device),
                               attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                               labels=torch.tensor([labels], device=device))
                losses.append(float(result.loss))
            out.append(losses[1] - losses[0])
    return np.asarray(out)
