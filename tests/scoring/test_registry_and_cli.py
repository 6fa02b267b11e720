"""The scorer registry and the `feddqc score` command end to end on the tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from feddqc_flwr.app.config import SCORERS as RUN_CONFIG_SCORERS
from feddqc_flwr.cli.score import add_score_command
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.data.corruption import corrupt_rows
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.scoring.registry import DEFAULT_SCORER, SCORERS, get_scorer
from tests.scoring.common import ROWS, make_ctx, prompt_ids, response_ids, token_nll


def test_registry_names_and_documentation() -> None:
    assert DEFAULT_SCORER == "ira-sum+loss"
    assert set(SCORERS) == {"ira", "ira-sum", "ppl", "loss", "ifd", "nuggets", "datainf", "random", "ds2",
                            "instructmining", "ira-sum+loss"} == set(RUN_CONFIG_SCORERS)
    for name, scorer in SCORERS.items():
        assert scorer.name == name and scorer.direction and scorer.cost and scorer.__doc__
    with pytest.raises(ValueError, match="known are"):
        get_scorer("nope")


def test_random_scorer_is_seeded(bundle) -> None:
    ctx = make_ctx(bundle)
    first, again = get_scorer("random").score(ROWS, ctx), get_scorer("random").score(ROWS, ctx)
    np.testing.assert_array_equal(first, again)
    ctx.seed = 1
    assert not np.array_equal(get_scorer("random").score(ROWS, ctx), first)


def test_score_command_writes_each_rows_loss_and_the_detection_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`feddqc score --scorer loss` on 20 demo rows (18 in the pool, 2 held out for testing), half of
    them corrupted (9 of 18). Each written score is minus the row's mean response NLL, recomputed
    here by an explicit forward of the plain saved model (the bundle's fresh LoRA has B = 0, so it
    changes nothing); AUROC is counted over all 81 (clean, bad) pairs, and the kept half is the
    top 9 by those scores."""
    parser = argparse.ArgumentParser()
    add_score_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "scores.jsonl"
    args = parser.parse_args(["score", "--model", str(tiny_model_dir), "--scorer", "loss", "--dataset", "demo",
                              "--max-samples", "20", "--max-length", "256", "--score-dtype", "float32",
                              "--out", str(out)])
    result = args.func(args)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 18 and set(lines[0]) == {"sample_id", "score", "is_bad", "bad_type"}
    assert sum(line["is_bad"] for line in lines) == 9

    rows, _ = corrupt_rows(split_source(DataSpec(source="demo", max_samples=20, seed=0)).pool.to_list(), 0.5,
                           "mixture", 0)
    assert [line["sample_id"] for line in lines] == [r["sample_id"] for r in rows]
    assert [line["is_bad"] for line in lines] == [r["is_bad"] for r in rows]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = []
    with torch.no_grad():
        for row in rows:
            prompt, response = prompt_ids(tok, row), response_ids(tok, row)
            assert 1 + len(prompt) + len(response) < 256  # nothing is cut
            expected.append(-token_nll(model, [tok.bos_token_id, *prompt, *response], 1 + len(prompt)).mean().item())
    np.testing.assert_allclose([line["score"] for line in lines], expected, rtol=1e-4)

    bad = [line["is_bad"] for line in lines]
    clean_scores = [e for e, b in zip(expected, bad, strict=True) if not b]
    bad_scores = [e for e, b in zip(expected, bad, strict=True) if b]
    auroc = sum(1.0 if c > b else 0.5 if c == b else 0.0 for c in clean_scores for b in bad_scores) / 81
    kept = sorted(range(18), key=lambda i: -expected[i])[:9]
    kept_bad = sum(bad[i] for i in kept)
    assert result["overall"] == pytest.approx({"n": 18, "bad_fraction": 0.5, "auroc": auroc, "kept": 9,
                                               "kept_clean_fraction": (9 - kept_bad) / 9,
                                               "removal_precision": (9 - kept_bad) / 9,
                                               "removal_recall": (9 - kept_bad) / 9})
    assert result["seconds"] > 0
