"""`feddqc bench reload`: a fresh process pays the full set-up, a warm process only the adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from feddqc_flwr.bench.reload import cold_message, quantized_loads, warm_message
from feddqc_flwr.llm.model import load_model_bundle
from tests.helpers import default_run_config


@pytest.fixture()
def run_config(tiny_model_dir: Path) -> dict:
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "max-samples": 0, "max-response-words": 0,
                "lora-r": 4, "lora-alpha": 8})
    return raw


def test_cold_message_times_each_part_inside_the_process_wall(run_config: dict) -> None:
    out = cold_message(run_config)
    parts = out["import_seconds"] + out["data_seconds"] + out["model_seconds"]
    assert min(out["import_seconds"], out["data_seconds"], out["model_seconds"]) > 0
    assert parts < out["process_seconds"]  # the wall adds interpreter start-up and exit


def test_warm_message_reuses_the_cached_bundle(run_config: dict) -> None:
    load_model_bundle.cache_clear()
    out = warm_message(run_config, repeats=3)
    info = load_model_bundle.cache_info()
    assert (info.misses, info.hits) == (1, 3)  # one load, then every message hits the cache
    assert out["first_load_in_process_seconds"] > 0 and out["message_setup_seconds"] > 0


def test_quantized_loads_read_the_copy_after_the_first(tiny_model_dir: Path) -> None:
    out = quantized_loads(str(tiny_model_dir), "8bit", repeats=1)
    flags = {mode: [r["reused"] for r in runs] for mode, runs in out["runs"].items()}
    assert flags == {"source": [False], "first": [False], "copy": [True]}  # each repeat starts empty
    assert all(s > 0 for s in out["median_seconds"].values())
