"""Each server row's own metric values: evaluated per split and written per round for the bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from feddqc_flwr.app.results import RunRecorder, last_row_values
from feddqc_flwr.app.server_app import ServerRows, evaluate_splits
from feddqc_flwr.llm.model import ModelBundle
from tests.evaluation.presence import WORDS, presence_model, word_row
from tests.helpers import make_config


def test_recorder_appends_a_line_per_round_and_the_last_one_is_read_back(tmp_path: Path) -> None:
    recorder = RunRecorder(make_config(), tmp_path)
    assert last_row_values(recorder.run_dir) is None
    ids = {"test": ["a", "b"], "valid": ["c"]}
    recorder.write_row_values(0, ids, {"test-loss": [2.0, 3.0], "valid-loss": [1.0]})
    recorder.write_row_values(1, ids, {"test-loss": [1.5, float("nan")], "valid-loss": [0.5]})
    lines = (recorder.run_dir / "row-values.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["values"]["test-loss"] == [2.0, 3.0]
    assert last_row_values(recorder.run_dir) == {"server_round": 1, "sample_ids": ids,
                                                 "values": {"test-loss": [1.5, None], "valid-loss": [0.5]}}


@pytest.fixture(scope="module")
def presence(tiny_model_dir: Path) -> ModelBundle:
    from transformers import AutoTokenizer

    return presence_model(AutoTokenizer.from_pretrained(tiny_model_dir), WORDS, weight=6.0)


def test_evaluate_splits_keys_row_values_like_the_metrics(presence: ModelBundle) -> None:
    """Test rows hold their own word (alignment 1 each); validation rows 0-3 hold the next row's
    word (0 each) and rows 4-7 their own (1 each): known by the presence model's construction."""
    torch.set_num_threads(1)
    test = [word_row(w, w) for w in WORDS]
    valid = [word_row(WORDS[(i + 1) % 4] if i < 4 else w, w) for i, w in enumerate(WORDS)]
    cfg = make_config(eval_metrics="loss,alignment", eval_align_candidates=10, max_length=64)
    values, per_row = evaluate_splits(cfg, presence, ServerRows(test=test, valid=valid, reference=[]), ())
    assert set(per_row) == {"valid-loss", "valid-align-acc", "test-loss", "test-align-acc"}
    assert per_row["test-align-acc"] == [1.0] * 8 and values["test-align-acc"] == 1.0
    assert per_row["valid-align-acc"] == [0.0] * 4 + [1.0] * 4 and values["valid-align-acc"] == 0.5
    assert values["test-loss"] == pytest.approx(sum(per_row["test-loss"]) / 8)


def test_validation_rows_get_only_the_validation_metrics_when_set(presence: ModelBundle) -> None:
    """eval-valid-metrics = loss: alignment on the test rows only (a cheap selection metric)."""
    torch.set_num_threads(1)
    rows = [word_row(w, w) for w in WORDS]
    cfg = make_config(eval_metrics="loss,alignment", eval_valid_metrics="loss", max_length=64)
    values, per_row = evaluate_splits(cfg, presence, ServerRows(test=rows, valid=rows, reference=[]), ())
    assert set(per_row) == {"valid-loss", "test-loss", "test-align-acc"}
    assert values["test-align-acc"] == 1.0 and "valid-align-acc" not in values
    with pytest.raises(ValueError, match="'eval-valid-metrics' = 'bleu': allowed values"):
        make_config(eval_valid_metrics="loss,bleu")
