"""Right-padding of (input ids, labels) sequences, shared by scoring and training."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from feddqc_flwr.llm.prompts import IGNORE_INDEX


def pad_sequences(sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids (pad_id), attention_mask (0 on padding) and labels (IGNORE_INDEX on padding)."""
    width = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (seq_ids, seq_labels) in enumerate(sequences):
        ids[row, : len(seq_ids)] = torch.tensor(list(seq_ids))
        labels[row, : len(seq_labels)] = torch.tensor(list(seq_labels))
        attention[row, : len(seq_ids)] = 1
    return ids, attention, labels
