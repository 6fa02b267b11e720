"""The data pipeline behind ClientApp and ServerApp: one spec in, one client's rows out.

source -> clean -> drop over-long responses -> seeded shuffle + cap -> global clean test split
-> partition the rest -> per client: clean validation split + corrupted train split.

Every step is seeded by the spec, so each virtual client (and the server) rebuilds exactly the
same split in its own process. The split, the partitions and the validation rows follow
`spec.data_seed` (the run's `split-seed`) and only the corruption follows `spec.seed`, so runs
with different training seeds are evaluated on the same rows and can be compared pairwise.
Loading and splitting are cached per process: in Flower simulation several virtual clients
share one worker process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datasets import Dataset
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from flwr_datasets.partitioner import Partitioner

from feddqc_flwr.data.corruption import client_corruption_seed, corrupt_rows
from feddqc_flwr.data.loaders import load_source
from feddqc_flwr.data.partition import build_partitioner, client_corrupt_ratios, load_partition
from feddqc_flwr.data.schema import RESPONSE_TOO_LONG_FOR_RUN, to_dataset
from feddqc_flwr.data.spec import ClientData, DataSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSource:
    """The filtered, capped source split into the training pool and the global test rows."""

    pool: Dataset
    test: Dataset
    skipped: dict[str, int]


@contextmanager
def _quiet() -> Iterator[None]:
    """No `datasets` progress bars for these tiny selects (one per client per round is noise)."""
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _fraction_count(n: int, fraction: float) -> int:
    return min(n, math.floor(fraction * n + 0.5))


@lru_cache(maxsize=4)
def _clean_source(source: str, field_map: str) -> tuple[Dataset, tuple[tuple[str, int], ...]]:
    ds, report = load_source(source, field_map)
    return ds, tuple(sorted(report.items()))


@lru_cache(maxsize=4)
def _split_source(source: str, field_map: str, max_response_words: int, max_samples: int,
                  test_fraction: float, seed: int) -> SplitSource:
    ds, skipped_items = _clean_source(source, field_map)
    skipped = dict(skipped_items)
    if max_response_words > 0:
        keep = [i for i, r in enumerate(ds["response"]) if len(r.split()) <= max_response_words]
        if len(keep) < len(ds):
            skipped[RESPONSE_TOO_LONG_FOR_RUN] = len(ds) - len(keep)
            logger.warning("%s: dropped %d row(s) whose response has more than %d words "
                           "(max-response-words)", source, len(ds) - len(keep), max_response_words)
        ds = ds.select(keep)
    order = np.random.default_rng(seed).permutation(len(ds))
    if max_samples > 0:
        order = order[:max_samples]
    n_test = _fraction_count(len(order), test_fraction)
    with _quiet():  # a flat pool: partitioners call Dataset.unique, which flattens on every call
        pool = ds.select(order[n_test:].tolist()).flatten_indices()
        test = ds.select(order[:n_test].tolist()).flatten_indices()
    return SplitSource(pool, test, skipped)


def split_source(spec: DataSpec) -> SplitSource:
    """Training pool, global test split and skip counts for a spec (cached per process)."""
    return _split_source(spec.source, spec.field_map, spec.max_response_words, spec.max_samples,
                         spec.test_fraction, spec.data_seed)


@lru_cache(maxsize=4)
def _partitioner(spec: DataSpec, num_partitions: int) -> Partitioner:
    return build_partitioner(split_source(spec).pool, spec, num_partitions)


def _partition_key(spec: DataSpec) -> DataSpec:
    """The spec with the fields that do not affect partitioning reset, for the cache key."""
    return DataSpec(source=spec.source, field_map=spec.field_map, partitioner=spec.partitioner,
                    partition_by=spec.partition_by, dirichlet_alpha=spec.dirichlet_alpha,
                    max_samples=spec.max_samples, max_response_words=spec.max_response_words,
                    test_fraction=spec.test_fraction, split_seed=spec.data_seed)


def load_eval_data(spec: DataSpec) -> Dataset:
    """The global clean test split (server-side evaluation); raises DataLoadError early."""
    return split_source(spec).test


def load_client_data(spec: DataSpec, partition_id: int, num_partitions: int) -> ClientData:
    """Client `partition_id`'s corrupted train split, clean validation split and skip counts.

    `skipped` counts rows dropped from the whole source (they never reached any partition), so
    every client reports the same numbers.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id {partition_id} outside 0..{num_partitions - 1}")
    ratio = client_corrupt_ratios(spec, num_partitions)[partition_id]  # config errors first
    source = split_source(spec)
    part = load_partition(_partitioner(_partition_key(spec), num_partitions), partition_id)
    part = part.select(np.random.default_rng(spec.data_seed + partition_id).permutation(len(part)).tolist())
    n_valid = min(_fraction_count(len(part), spec.valid_fraction), len(part) - 1)
    valid = part.select(range(n_valid))
    train_rows = part.select(range(n_valid, len(part))).to_list()
    rows, fallbacks = corrupt_rows(train_rows, ratio, spec.corrupt_type,
                                   client_corruption_seed(spec.seed, partition_id))
    if fallbacks:
        logger.info("client %d: corruption fallbacks to noisy: %s", partition_id, dict(fallbacks))
    return ClientData(train=to_dataset(rows), valid=valid, skipped=dict(source.skipped))
