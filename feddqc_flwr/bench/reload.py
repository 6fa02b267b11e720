"""What a ClientApp pays per message when its process is fresh (deployment) vs reused (simulation).

A SuperNode starts one `flwr-clientapp` process per message (flwr 1.41: the process pulls one
task, runs the ClientApp, pushes the reply and exits), so in deployment every message pays the
Python start, the imports, the client's data and the base model + LoRA. In simulation a Ray
actor keeps `load_model_bundle`'s cache, so a message only overwrites the adapter.

- cold: a fresh interpreter does exactly a `train` message's set-up (imports of the ClientApp
  module and of what its train handler imports, `load_client_data`, `load_model_bundle`), timed
  inside and as the process's wall time;
- warm: the same set-up in this process after the first load (cache hit + `set_adapter_arrays`);
- quantized (`--quantization 8bit|4bit`): a fresh process loading the model in 8/4-bit the old way
  (quantize from the source weights), the first time through `quantized_cache` (quantize and save
  the copy) and every later time (read the copy).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from feddqc_flwr.app.config import parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle, resolve_model_path, set_adapter_arrays

_CHILD = """
import json, sys, time
started = time.perf_counter()
import feddqc_flwr.app.client_app  # flwr and numpy: the handlers import the rest when they need it
import feddqc_flwr.data.client_data, feddqc_flwr.llm.model, feddqc_flwr.scoring.registry  # what a train message
import feddqc_flwr.training.local_sft  # imports on top (torch, transformers, peft, datasets)
imported = time.perf_counter()
from feddqc_flwr.app.config import parse_run_config
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.llm.model import load_model_bundle
from feddqc_flwr.app.model_spec import spec_from_config
cfg = parse_run_config(json.loads(sys.argv[1]))
load_client_data(cfg.data_spec, 0, 2)
data = time.perf_counter()
load_model_bundle(spec_from_config(cfg))
loaded = time.perf_counter()
print(json.dumps({"import_seconds": imported - started, "data_seconds": data - imported,
                  "model_seconds": loaded - data}))
"""


def cold_message(run_config: Mapping[str, Any]) -> dict[str, float]:
    """One fresh process doing a message's set-up; `process_seconds` includes interpreter start and exit."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(dict(run_config))], capture_output=True,
                          text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "process_seconds": time.perf_counter() - started}


def warm_message(run_config: Mapping[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of the same set-up with the process's cached bundle (first load timed separately)."""
    cfg = parse_run_config(run_config)
    spec = spec_from_config(cfg)
    started = time.perf_counter()
    arrays = adapter_arrays(load_model_bundle(spec).model)
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        load_client_data(cfg.data_spec, 0, 2)
        set_adapter_arrays(load_model_bundle(spec).model, arrays)
        times.append(time.perf_counter() - started)
    return {"first_load_in_process_seconds": first, "message_setup_seconds": statistics.median(times)}


def bench_reload(run_config: Mapping[str, Any], repeats: int) -> dict[str, Any]:
    """Cold (fresh process per message) vs warm (cached bundle) message set-up, medians over `repeats`."""
    cold = [cold_message(run_config) for _ in range(repeats)]
    medians = {key: statistics.median(c[key] for c in cold) for key in cold[0]}
    warm = warm_message(run_config, repeats)
    return {"repeats": repeats, "cold_runs": cold, "cold_median": medians, "warm": warm,
            "cold_over_warm_seconds": medians["process_seconds"] - warm["message_setup_seconds"]}


_QUANTIZED_CHILD = """
import json, sys, time
import torch
from feddqc_flwr.llm.quantized_cache import load_quantized, quantize_from_source
path, quantization, mode = sys.argv[1:4]
placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}  # as load_base_model places it
started = time.perf_counter()
if mode == "source":
    quantize_from_source(path, quantization, torch.float32, **placement)
    reused = False
else:
    reused = load_quantized(path, quantization, torch.float32, **placement)[1]
print(json.dumps({"seconds": time.perf_counter() - started, "reused": reused}))
"""
QUANTIZED_MODES = ("source", "first", "copy")


def quantized_loads(model: str, quantization: str, repeats: int) -> dict[str, Any]:
    """Median seconds of an 8/4-bit model load in a fresh process (imports not counted): `source`
    quantizes from the source weights (before `quantized_cache`), `first` also saves the copy,
    `copy` reads it. Each repeat starts from an empty copy cache."""
    path = resolve_model_path(model)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in QUANTIZED_MODES}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="feddqc-quantized-") as cache:
            for mode in QUANTIZED_MODES:
                proc = subprocess.run([sys.executable, "-c", _QUANTIZED_CHILD, path, quantization, mode],
                                      capture_output=True, text=True, check=True,
                                      env={**os.environ, "FEDDQC_CACHE": cache})
                runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"quantization": quantization, "repeats": repeats, "runs": runs,
            "median_seconds": {mode: statistics.median(r["seconds"] for r in rs) for mode, rs in runs.items()}}
