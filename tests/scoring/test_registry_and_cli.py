"""The scorer registry and the `feddqc score` command end to end on the tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from feddqc_flwr.cli.score import add_score_command
from feddqc_flwr.scoring.registry import DEFAULT_SCORER, SCORERS, get_scorer
from tests.scoring.common import ROWS, make_ctx


def test_registry_names_and_documentation() -> None:
    assert DEFAULT_SCORER == "loss"
    assert set(SCORERS) == {"ira", "ira-sum", "ppl", "loss", "ifd", "nuggets", "datainf", "random", "ds2",
                            "instructmining"}
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


def test_score_command_writes_one_line_per_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_score_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "scores.jsonl"
    args = parser.parse_args(["score", "--model", str(tiny_model_dir), "--scorer", "loss", "--dataset", "demo",
                              "--max-samples", "20", "--max-length", "128", "--out", str(out)])
    result = args.func(args)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == result["overall"]["n"] > 0
    assert set(lines[0]) == {"sample_id", "score", "is_bad", "bad_type"}
    assert sum(line["is_bad"] for line in lines) == round(result["overall"]["bad_fraction"] * len(lines))
    assert 0.0 <= result["overall"]["auroc"] <= 1.0 and result["seconds"] > 0
