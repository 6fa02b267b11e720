"""The multi-criterion filter's scores: one keep-score column per criterion from explicit forwards,
the rank-min that ranks rows as the joint filter does, and the config's criteria = the registry's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddqc_flwr.app.config import SCORERS as RUN_CONFIG_SCORERS
from feddqc_flwr.scoring.criteria import criteria_of, score_columns
from feddqc_flwr.scoring.registry import get_scorer
from feddqc_flwr.selection.joint_rank import joint_keep_score
from tests.helpers import make_config
from tests.scoring.common import ROWS, make_ctx, prompt_ids, response_ids, token_nll


def test_ira_sum_and_loss_columns_match_explicit_forwards(bundle) -> None:
    """Column 0: summed response NLL alone minus summed NLL after the prompt (IRA, sum form);
    column 1: minus the mean NLL after the prompt (loss's keep-score). One sequence at a time."""
    tok, model, bos = bundle.tokenizer, bundle.model, bundle.tokenizer.bos_token_id
    want = []
    with torch.no_grad():
        for row in ROWS:
            prompt, resp = prompt_ids(tok, row), response_ids(tok, row)
            cond = token_nll(model, [bos, *prompt, *resp], 1 + len(prompt))
            bare = token_nll(model, [bos, *resp], 1)
            want.append([(bare.sum() - cond.sum()).item(), -cond.mean().item()])
    got = score_columns(get_scorer("ira-sum+loss"), ROWS, make_ctx(bundle, batch_size=3))
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-4)


def test_rank_min_by_hand() -> None:
    """Ranks in [0, 1] among each column's finite values: (0, .5, 1, NaN) and (0, 2/3, 1/3, 1);
    the row-wise min is (0, .5, 1/3, NaN): a row unscorable by one criterion stays unscorable."""
    columns = np.array([[1.0, -3.0], [2.0, -1.0], [3.0, -2.0], [np.nan, 0.0]])
    np.testing.assert_allclose(joint_keep_score(columns), [0.0, 0.5, 1 / 3, np.nan])
    np.testing.assert_array_equal(joint_keep_score(np.array([[2.0], [-1.0]])), [2.0, -1.0])  # one criterion: as is


@pytest.mark.parametrize("name", RUN_CONFIG_SCORERS)
def test_the_config_names_the_same_criteria_as_the_registry(name: str) -> None:
    assert make_config(scorer=name).criteria == criteria_of(get_scorer(name))


def test_criterion_lambdas_must_name_every_criterion() -> None:
    cfg = make_config(scorer="ira-sum+loss", threshold_mode="lambda", criterion_lambdas="ira-sum=1.5, loss=-3")
    assert cfg.named_lambdas == {"ira-sum": 1.5, "loss": -3.0}
    for bad in ("", "ira-sum=1.5", "ira-sum=1.5, fit=-3", "ira-sum=x, loss=-3", "ira-sum=1, loss=2, loss=3"):
        with pytest.raises(ValueError, match="'criterion-lambdas'.*ira-sum=<value>, loss=<value>"):
            make_config(scorer="ira-sum+loss", threshold_mode="lambda", criterion_lambdas=bad)
