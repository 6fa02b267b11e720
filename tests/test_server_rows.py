"""The server's evaluation rows and the anchors it sends to clients never overlap."""

from __future__ import annotations

import pytest

from feddqc_flwr.config import ConfigError
from feddqc_flwr.server_app import server_rows
from tests.helpers import make_config

ROWS = [{"sample_id": str(i)} for i in range(10)]


def test_anchor_rows_come_from_the_end_and_are_disjoint() -> None:
    evaluation, anchors = server_rows(make_config(scorer="nuggets", reference_rows=3, eval_samples=16), ROWS)
    assert [r["sample_id"] for r in anchors] == ["7", "8", "9"]
    assert [r["sample_id"] for r in evaluation] == [str(i) for i in range(7)]


def test_ira_sends_no_anchors() -> None:
    evaluation, anchors = server_rows(make_config(eval_samples=4), ROWS)
    assert anchors == [] and len(evaluation) == 4


def test_anchor_scorer_without_test_rows_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="'scorer' = 'datainf' needs reference rows"):
        server_rows(make_config(scorer="datainf"), ROWS[:1])
