"""The bundled SmolLM2 GGUF converts to a plain safetensors model that scores text sensibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feddqc_flwr.llm.model import ModelSpec, load_base_model, resolve_model_path
from feddqc_flwr.scoring.ira import ira_scores

pytest.importorskip("gguf")


def test_bundled_model_converts_once_and_prefers_matched_answers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEDDQC_CACHE", str(tmp_path))
    path = Path(resolve_model_path("bundled:smollm2-135m-instruct"))
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    assert (path / "model.safetensors").is_file() and not list(path.parent.glob(".tmp-*"))
    assert resolve_model_path("bundled:smollm2-135m-instruct") == str(path)  # cached: no second conversion
    model, tokenizer = load_base_model(ModelSpec(name="bundled:smollm2-135m-instruct"))
    rows = [{"instruction": "What is the capital of France?", "input": "", "history": [],
             "response": "The capital of France is Paris."},
            {"instruction": "How many legs does a spider have?", "input": "", "history": [],
             "response": "A spider has eight legs."}]
    swapped = [{**rows[0], "response": rows[1]["response"]}, {**rows[1], "response": rows[0]["response"]}]
    kwargs = {"template": "alpaca", "max_length": 128, "batch_size": 2, "device": model.device}
    matched = ira_scores(model, tokenizer, rows, **kwargs)
    mismatched = ira_scores(model, tokenizer, swapped, **kwargs)
    assert np.all(matched.loss_conditioned < 2.0)
    assert np.all(matched.ira > mismatched.ira + 1.0)
