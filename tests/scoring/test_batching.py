"""Batch size and padding do not change any scorer's keep-scores."""

from __future__ import annotations

import numpy as np
import pytest

from feddqc_flwr.scoring.registry import SCORERS, get_scorer
from tests.scoring.common import ANCHORS, ROWS, make_ctx


@pytest.mark.parametrize("name", [n for n in SCORERS if n != "random"])
def test_batch_size_does_not_change_scores(bundle, name: str) -> None:
    scorer = get_scorer(name)
    one = scorer.score(ROWS, make_ctx(bundle, batch_size=1, reference_rows=ANCHORS))  # no padding
    for batch_size in (3, 8):  # a partial last batch, then everything padded into one batch
        many = scorer.score(ROWS, make_ctx(bundle, batch_size=batch_size, reference_rows=ANCHORS))
        np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(one).max()),
                                   err_msg=f"batch size {batch_size}")
