"""Partition sizes and label skew follow each scheme; per-client ratios are checked."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from feddqc_flwr.data.partition import PartitionError, build_partitioner, client_corrupt_ratios, load_partition
from feddqc_flwr.data.schema import to_dataset
from feddqc_flwr.data.spec import DataSpec

# flwr re-draws Dirichlet proportions below min_partition_size and warns each time: expected here
pytestmark = pytest.mark.filterwarnings("ignore:The specified min_partition_size")


@pytest.fixture
def labelled(make_row) -> Dataset:
    """400 rows, 4 balanced labels."""
    return to_dataset([make_row(i, group=f"label-{i % 4}") for i in range(400)])


def _parts(ds: Dataset, spec: DataSpec, n: int) -> list[Dataset]:
    p = build_partitioner(ds, spec, n)
    return [load_partition(p, i) for i in range(n)]


def _label_skew(parts: list[Dataset]) -> float:
    """Mean total-variation distance between each partition's label mix and the uniform mix."""
    tvs = []
    for part in parts:
        counts = Counter(part["group"])
        tvs.append(0.5 * sum(abs(counts.get(f"label-{k}", 0) / len(part) - 0.25) for k in range(4)))
    return sum(tvs) / len(tvs)


def test_iid_sizes_balanced_and_disjoint(labelled: Dataset) -> None:
    parts = _parts(labelled, DataSpec(partitioner="iid"), 3)
    assert [len(p) for p in parts] == [134, 133, 133]
    ids = [i for p in parts for i in p["sample_id"]]
    assert len(set(ids)) == 400


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_not(labelled: Dataset) -> None:
    small = [_label_skew(_parts(labelled, DataSpec(partitioner="dirichlet", dirichlet_alpha=0.1, seed=s), 4))
             for s in range(3)]
    large = [_label_skew(_parts(labelled, DataSpec(partitioner="dirichlet", dirichlet_alpha=100.0, seed=s), 4))
             for s in range(3)]
    assert min(small) > 0.3
    assert max(large) < 0.1
    parts = _parts(labelled, DataSpec(partitioner="dirichlet", dirichlet_alpha=0.1, seed=0), 4)
    assert sum(len(p) for p in parts) == 400 and min(len(p) for p in parts) >= 10


def test_dirichlet_is_seeded(labelled: Dataset) -> None:
    spec = DataSpec(partitioner="dirichlet", dirichlet_alpha=0.3, seed=4)
    a = [p["sample_id"] for p in _parts(labelled, spec, 3)]
    b = [p["sample_id"] for p in _parts(labelled, spec, 3)]
    c = [p["sample_id"] for p in _parts(labelled, DataSpec(partitioner="dirichlet", dirichlet_alpha=0.3, seed=5), 3)]
    assert a == b and a != c


def test_dirichlet_works_on_small_pools(make_row) -> None:
    small = to_dataset([make_row(i, group=f"g{i % 3}") for i in range(30)])
    parts = _parts(small, DataSpec(partitioner="dirichlet", dirichlet_alpha=1.0), 3)
    assert sum(len(p) for p in parts) == 30 and min(len(p) for p in parts) >= 5


def test_dirichlet_needs_a_label(make_row) -> None:
    flat = to_dataset([make_row(i) for i in range(20)])
    with pytest.raises(PartitionError, match="only one distinct value"):
        build_partitioner(flat, DataSpec(partitioner="dirichlet"), 2)
    with pytest.raises(PartitionError, match="'partition-by' = 'topic'"):
        build_partitioner(flat, DataSpec(partitioner="dirichlet", partition_by="topic"), 2)


def test_natural_partitions_hold_one_id_each(make_row) -> None:
    ds = to_dataset([make_row(i, group=f"user-{i % 3}") for i in range(30)])
    parts = _parts(ds, DataSpec(partitioner="natural"), 3)
    groups = [set(p["group"]) for p in parts]
    assert all(len(g) == 1 for g in groups)
    assert sorted(g.pop() for g in groups) == ["user-0", "user-1", "user-2"]


def test_natural_folds_extra_ids_whole(make_row) -> None:
    sizes = {"u0": 10, "u1": 8, "u2": 6, "u3": 4, "u4": 2}
    groups = [u for u, n in sizes.items() for _ in range(n)]
    rows = [make_row(i, group=g) for i, g in enumerate(groups)]
    parts = _parts(to_dataset(rows), DataSpec(partitioner="natural"), 2)
    # ids dealt round-robin by size (10, 8, 6, 4, 2 rows): whole ids, sizes 18 and 12
    assert [sorted(set(p["group"])) for p in parts] == [["u0", "u2", "u4"], ["u1", "u3"]]
    assert [len(p) for p in parts] == [18, 12]
    assert "natural_partition" not in parts[0].column_names
    with pytest.raises(PartitionError, match="5 distinct ids for 6 partitions"):
        build_partitioner(to_dataset(rows), DataSpec(partitioner="natural"), 6)


def test_quality_is_iid_with_per_client_ratios(labelled: Dataset) -> None:
    spec = DataSpec(partitioner="quality", client_corrupt_ratios="0.1, 0.1,0.9")
    assert [len(p) for p in _parts(labelled, spec, 3)] == [134, 133, 133]
    assert client_corrupt_ratios(spec, 3) == [0.1, 0.1, 0.9]
    with pytest.raises(PartitionError, match="'client-corrupt-ratios'.*3 ratio\\(s\\) for 2 clients"):
        client_corrupt_ratios(spec, 2)  # an extra ratio is a config error, not silently dropped
    with pytest.raises(PartitionError, match="'client-corrupt-ratios'.*3 ratio\\(s\\) for 4 clients"):
        client_corrupt_ratios(spec, 4)
    with pytest.raises(PartitionError, match="client-corrupt-ratios"):
        client_corrupt_ratios(DataSpec(partitioner="quality"), 2)
    with pytest.raises(PartitionError, match="in \\[0, 1\\]"):
        client_corrupt_ratios(DataSpec(client_corrupt_ratios="0.5,1.5"), 2)
    assert client_corrupt_ratios(DataSpec(corrupt_ratio=0.3), 2) == [0.3, 0.3]
