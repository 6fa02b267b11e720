"""`feddqc bench reload`: a fresh process pays the full set-up, a warm process only the adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from feddqc_flwr.bench.reload import cold_message, warm_message
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
