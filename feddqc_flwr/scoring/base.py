"""What every data-quality scorer takes and returns, so the app can swap IRA for a baseline.

All scorers return KEEP-SCORES: higher = better = kept first, NaN = could not be scored (such
rows are dropped). Each scorer's class docstring says which end of its raw score is good and
how it is converted, and what it costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

Row = Mapping[str, Any]


@dataclass
class ScoringContext:
    """The model as it is now plus the encoding settings training uses.

    `compute_dtype` is the precision of the scoring passes' matrix products (autocast; see
    `feddqc_flwr.llm.precision`). `reference_rows` are clean anchor/validation rows the server
    distributes (NUGGETS anchors, DataInf validation set); scorers that do not need them ignore
    them. `options` carries the run-config keys of one scorer (DS2's rater, InstructMining's rule
    file); empty = defaults.
    """

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    template: str
    max_length: int
    batch_size: int
    device: torch.device
    compute_dtype: torch.dtype = torch.float32
    reference_rows: Sequence[Row] = field(default_factory=list)
    seed: int = 0
    options: Mapping[str, str] = field(default_factory=dict)  # scorer settings from the run config, e.g. rater-url


class Scorer(Protocol):
    """A data-quality scorer.

    name: registry key. direction: which end of the RAW score is good (the keep-score is
    already converted so that higher = better). cost: forward/backward passes per sample.
    """

    name: str
    direction: str
    cost: str

    def score(self, rows: Sequence[Row], ctx: ScoringContext) -> np.ndarray:
        """Keep-scores (higher = kept first, NaN = unscorable), one per row."""
        ...
