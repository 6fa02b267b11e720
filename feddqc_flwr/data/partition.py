"""Split the training pool across clients with flwr-datasets partitioners (no hub involved).

Schemes (run config `partitioner`):
- iid: equal shards of the (already seeded-shuffled) pool;
- dirichlet: label skew over `partition-by` with concentration `dirichlet-alpha`;
- natural: one natural id (user, client, domain) per partition; when there are more ids than
  partitions, ids are dealt round-robin by size so each partition gets whole ids;
- quality: IID rows, but each client gets its own corruption ratio (`client-corrupt-ratios`).
"""

from __future__ import annotations

from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner, Partitioner

from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.errors import UserError

SCHEMES = ("iid", "dirichlet", "natural", "quality")
_FOLD_COLUMN = "natural_partition"


class PartitionError(UserError, ValueError):
    """A partitioning request the data cannot satisfy; the message names the run-config key."""


def _check_column(ds: Dataset, column: str) -> None:
    if column not in ds.column_names or column == "history":
        allowed = ", ".join(c for c in ds.column_names if c != "history")
        raise PartitionError(f"run config 'partition-by' = {column!r}: not a usable column; "
                             f"use one of {allowed}")


def _min_partition_size(num_rows: int, num_partitions: int) -> int:
    """flwr's default of 10 rows is impossible on small pools; ask for at most half a fair share."""
    return max(1, min(10, num_rows // (2 * num_partitions)))


def _natural(ds: Dataset, column: str, num_partitions: int) -> NaturalIdPartitioner:
    ids = ds.unique(column)
    if len(ids) < num_partitions:
        raise PartitionError(f"run config 'partition-by' = {column!r}: {len(ids)} distinct ids "
                             f"for {num_partitions} partitions; natural partitioning needs at least "
                             "one id per partition")
    if len(ids) == num_partitions:
        partitioner = NaturalIdPartitioner(partition_by=column)
        partitioner.dataset = ds
        return partitioner
    sizes: dict[str, int] = {}
    for value in ds[column]:
        sizes[value] = sizes.get(value, 0) + 1
    ranked = sorted(sizes, key=lambda v: (-sizes[v], str(v)))
    width = len(str(num_partitions))
    fold = {v: str(rank % num_partitions).zfill(width) for rank, v in enumerate(ranked)}
    partitioner = NaturalIdPartitioner(partition_by=_FOLD_COLUMN)
    partitioner.dataset = ds.add_column(_FOLD_COLUMN, [fold[v] for v in ds[column]])
    return partitioner


def build_partitioner(ds: Dataset, spec: DataSpec, num_partitions: int) -> Partitioner:
    """A flwr-datasets partitioner over `ds` for the spec's scheme, seeded by spec.data_seed."""
    if num_partitions < 1:
        raise PartitionError(f"num-partitions = {num_partitions}: must be >= 1")
    if spec.partitioner not in SCHEMES:
        raise PartitionError(f"run config 'partitioner' = {spec.partitioner!r}: allowed values "
                             f"are {', '.join(SCHEMES)}")
    if len(ds) < num_partitions:
        raise PartitionError(f"{len(ds)} training row(s) for {num_partitions} partitions: use fewer "
                             "clients, raise 'max-samples' or lower 'test-fraction'")
    if spec.partitioner in ("iid", "quality"):
        partitioner: Partitioner = IidPartitioner(num_partitions=num_partitions)
    elif spec.partitioner == "natural":
        _check_column(ds, spec.partition_by)
        return _natural(ds, spec.partition_by, num_partitions)
    else:
        _check_column(ds, spec.partition_by)
        if len(ds.unique(spec.partition_by)) < 2:
            raise PartitionError(f"run config 'partition-by' = {spec.partition_by!r}: only one "
                                 "distinct value in this dataset, so there is no label to skew; "
                                 "map a label column with field-map group=<column>")
        if spec.dirichlet_alpha <= 0:
            raise PartitionError(f"run config 'dirichlet-alpha' = {spec.dirichlet_alpha}: must be > 0")
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions, partition_by=spec.partition_by, alpha=spec.dirichlet_alpha,
            min_partition_size=_min_partition_size(len(ds), num_partitions), self_balancing=False,
            shuffle=True, seed=spec.data_seed)
    partitioner.dataset = ds
    return partitioner


def load_partition(partitioner: Partitioner, partition_id: int) -> Dataset:
    """One partition, without any helper column added for natural folding."""
    try:
        part = partitioner.load_partition(partition_id)
    except ValueError as err:  # Dirichlet gives up after 10 draws below min_partition_size
        raise PartitionError(f"cannot partition: {err} (raise 'dirichlet-alpha' or use fewer "
                             "partitions)") from err
    return part.remove_columns(_FOLD_COLUMN) if _FOLD_COLUMN in part.column_names else part


def client_corrupt_ratios(spec: DataSpec, num_partitions: int) -> list[float]:
    """Each client's corruption ratio: `client-corrupt-ratios` when given, else `corrupt-ratio`.

    The quality scheme requires the per-client list; other schemes may use it too.
    """
    text = spec.client_corrupt_ratios.strip()
    if not text:
        if spec.partitioner == "quality":
            raise PartitionError("partitioner 'quality' needs run config 'client-corrupt-ratios', "
                                 "e.g. '0.1,0.1,0.9' (one ratio per client)")
        return [spec.corrupt_ratio] * num_partitions
    try:
        ratios = [float(x) for x in text.split(",")]
    except ValueError as err:
        raise PartitionError(f"run config 'client-corrupt-ratios' = {text!r}: not a comma list "
                             "of numbers") from err
    if len(ratios) != num_partitions:
        raise PartitionError(f"run config 'client-corrupt-ratios' = {text!r}: {len(ratios)} "
                             f"ratio(s) for {num_partitions} clients; give one per client")
    if any(not 0.0 <= r <= 1.0 for r in ratios):
        raise PartitionError(f"run config 'client-corrupt-ratios' = {text!r}: ratios must be in [0, 1]")
    return ratios[:num_partitions]
