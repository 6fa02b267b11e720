"""Algorithm 1 through the real ClientApp handlers: at every stage start the client re-scores
every row it has not trained (rows under lambda included), filters, sorts, and trains the first of
K-k+1 parts; `filtered-rows = "drop"` keeps the old behaviour. Partial participation: a client
left out of a stage's training keeps all its rows for the next stage.

The default scorer has two criteria (ira-sum, loss), each with its own lambda (here each one's
median): a row is kept only when both of its scores reach their lambdas, and kept rows are
ordered easy to hard by the worse of their two ranks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from feddqc_flwr.app.client_progress import ClientProgress
from feddqc_flwr.app.config import parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.protocol import SKETCH_KEY
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle
from tests.helpers import default_run_config, deliver

K = 3


pytestmark = pytest.mark.usefixtures("client_task_identity")


def _client(tiny_model_dir: Path, filtered_rows: str, aggregation_weight: str = "dataset"):
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 1, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "hierarchies": K, "num-server-rounds": K, "filtered-rows": filtered_rows,
                "aggregation-weight": aggregation_weight})
    cfg = parse_run_config(raw)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=raw)
    n_rows = len(load_client_data(cfg.data_spec, 0, 2).train)
    return context, adapter_arrays(load_model_bundle(spec_from_config(cfg)).model), n_rows


def _send(context: Context, message_type: str, content: RecordDict) -> Message:
    reply = deliver(context, message_type, content)
    assert not reply.has_error(), reply.error
    return reply


def _score(context: Context, arrays, stage: int) -> ClientProgress:
    _send(context, "query.score", RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": stage, "hierarchy": stage})}))
    return ClientProgress.load(context.state, 0)


def _train(context: Context, arrays, stage: int, lam: list[float]) -> dict:
    config = ConfigRecord({"server-round": stage, "hierarchy": stage, "rescore": True, "lr": 1e-3, "lambda": lam})
    return dict(_send(context, "train", RecordDict({"arrays": arrays, "config": config})).content["metrics"])


def _medians(progress: ClientProgress) -> list[float]:
    """One lambda per criterion: the median of its scores (about half the rows fall under each)."""
    return [float(v) for v in np.median(progress.score_matrix(), axis=0)]


def _passes(row_scores: list[float], lam: list[float]) -> bool:
    return all(s >= threshold for s, threshold in zip(row_scores, lam, strict=True))


def _easiest_first(kept: list[int], scores: dict[int, list[float]]) -> list[int]:
    """Kept rows by their worse criterion: each criterion's rank among the kept rows (share of them
    scoring lower, the tiny model's scores do not tie), the lower of the two, highest first."""
    def rank(i: int, c: int) -> float:
        return sum(scores[j][c] < scores[i][c] for j in kept) / max(1, len(kept) - 1)
    return sorted(kept, key=lambda i: (-min(rank(i, 0), rank(i, 1)), i))


def _stage(context: Context, arrays, stage: int, lam: list[float]) -> tuple[ClientProgress, ClientProgress, dict]:
    before = _score(context, arrays, stage)
    metrics = _train(context, arrays, stage, lam)
    return before, ClientProgress.load(context.state, 0), metrics


@pytest.mark.parametrize("filtered_rows", ["rescore", "drop"])
def test_three_stages_through_the_handlers(tiny_model_dir: Path, filtered_rows: str) -> None:
    context, arrays, n_rows = _client(tiny_model_dir, filtered_rows)
    first = _score(context, arrays, 1)
    assert sorted(first.scored_ids) == list(range(n_rows))  # stage 1 scores everything
    lam = _medians(first)
    assert len(lam) == 2  # ira-sum and loss
    trained: list[int] = []
    filtered_at_1: set[int] = set()
    dropped_total = 0
    for stage in range(1, K + 1):
        before, after, metrics = _stage(context, arrays, stage, lam)
        scores = dict(zip(before.scored_ids, before.scores, strict=True))
        untrained = sorted(set(range(n_rows)) - set(trained))
        if filtered_rows == "rescore":  # Algorithm 1: D_n = D_n minus what was trained
            assert sorted(before.scored_ids) == untrained
        else:
            assert set(before.scored_ids) <= set(untrained)
            assert not set(before.scored_ids) & filtered_at_1
        kept = [i for i in before.scored_ids if _passes(scores[i], lam)]
        fails_one = [i for i in before.scored_ids if _passes(scores[i][:1], lam[:1]) != _passes(scores[i][1:], lam[1:])]
        part = after.stage_train
        assert not set(fails_one) & set(part)  # failing either criterion is enough not to be trained
        assert fails_one or stage > 1  # at stage 1 (medians) some rows pass one criterion and fail the other
        assert len(part) == math.ceil(len(kept) / (K - stage + 1))  # first of K-k+1 equal parts
        assert part == _easiest_first(kept, scores)[:len(part)]  # easy to hard by the worse criterion
        assert not set(part) & set(trained)  # no row is trained twice
        assert metrics["stage-train"] == len(part) and metrics["pool"] == len(before.scored_ids)
        under = len(before.scored_ids) - len(kept)
        dropped_total += under
        assert metrics["dropped"] == (under if filtered_rows == "rescore" else dropped_total)
        if stage == 2 and filtered_rows == "rescore":  # rows under lambda at stage 1 are examined again
            assert filtered_at_1 <= set(before.scored_ids)
        if stage == 1:
            filtered_at_1 = set(before.scored_ids) - set(kept)
            assert filtered_at_1
        trained += part
        assert sorted(after.trained) == sorted(trained)
        if filtered_rows == "rescore":
            assert sorted(after.pool) == sorted(set(range(n_rows)) - set(trained))


def test_client_not_sampled_in_a_stage_keeps_every_row_for_the_next(tiny_model_dir: Path) -> None:
    context, arrays, n_rows = _client(tiny_model_dir, "rescore")
    lam = _medians(_score(context, arrays, 1))  # scored at stage 1, never trained
    before, after, _ = _stage(context, arrays, 2, lam)
    assert sorted(before.scored_ids) == list(range(n_rows))
    scores = dict(zip(before.scored_ids, before.scores, strict=True))
    kept = sum(1 for s in scores.values() if _passes(s, lam))
    assert len(after.stage_train) == math.ceil(kept / 2)  # stage 2 of 3: two parts
    before3, after3, _ = _stage(context, arrays, 3, lam)
    assert sorted(before3.scored_ids) == sorted(set(range(n_rows)) - set(after.stage_train))
    kept3 = [i for i, s in zip(before3.scored_ids, before3.scores, strict=True) if _passes(s, lam)]
    assert sorted(after3.stage_train) == sorted(kept3)  # the last stage trains all it keeps


@pytest.mark.parametrize("weight", ["dataset", "stage"])
def test_train_reply_weight_is_the_configured_row_count(tiny_model_dir: Path, weight: str) -> None:
    """`num-examples` (Flower's aggregation weight) is all training rows, or the stage's rows."""
    context, arrays, n_rows = _client(tiny_model_dir, "rescore", weight)
    lam = _medians(_score(context, arrays, 1))
    _, after, metrics = _stage(context, arrays, 1, lam)
    assert 0 < len(after.stage_train) < n_rows
    assert metrics["num-examples"] == (n_rows if weight == "dataset" else len(after.stage_train))
    assert metrics["train-prox"] == 0.0 and math.isfinite(metrics["train-loss"])  # no proximal-mu sent


def _counts(reply: Message) -> int:
    """Rows in the reply's first-criterion histogram (every criterion counts the same rows)."""
    record = reply.content[SKETCH_KEY]
    assert sum(record["ira-sum/counts"]) == sum(record["loss/counts"])
    return sum(record["ira-sum/counts"])


def test_score_reply_counts_every_fresh_score_and_train_counts_only_when_it_scored(tiny_model_dir: Path) -> None:
    """The score query's reply carries the bin counts of the pool it scored; a train message that
    follows it sends none (the server has them), one that scores (no query: lambda is known) does."""
    context, arrays, n_rows = _client(tiny_model_dir, "rescore")
    scored = _send(context, "query.score", RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": 1, "hierarchy": 1})}))
    assert _counts(scored) == scored.content["metrics"]["count"] == n_rows
    lam = _medians(ClientProgress.load(context.state, 0))
    config = {"server-round": 1, "hierarchy": 1, "rescore": True, "lr": 1e-3, "lambda": lam}
    after_query = _send(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(config)}))
    assert SKETCH_KEY not in after_query.content
    config.update({"server-round": 2, "hierarchy": 2})  # stage 2 starts without a query
    trained = _send(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(config)}))
    progress = ClientProgress.load(context.state, 0)
    assert progress.scored_stage == 2 and _counts(trained) == len(progress.scored_ids) == trained.content[
        "metrics"]["pool"] == n_rows - after_query.content["metrics"]["stage-train"]


def test_a_filtered_row_re_enters_when_its_re_scored_values_pass(tiny_model_dir: Path) -> None:
    """Lambdas stay fixed; the global adapter changes between stages, so re-scored rows that failed a
    criterion at stage 1 and pass both now are kept at stage 2, and ones that still fail are not."""
    context, arrays, n_rows = _client(tiny_model_dir, "rescore")
    first = _score(context, arrays, 1)
    lam = _medians(first)
    config = {"server-round": 1, "hierarchy": 1, "rescore": True, "lr": 5e-2, "lambda": lam}
    reply = _send(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(config)}))
    stage1 = dict(zip(first.scored_ids, first.scores, strict=True))
    filtered = {i for i, s in stage1.items() if not _passes(s, lam)}
    before, after, _ = _stage(context, reply.content["arrays"], 2, lam)  # the trained adapter as the new global
    stage2 = dict(zip(before.scored_ids, before.scores, strict=True))
    assert filtered <= set(stage2)  # every filtered row was scored again
    back = {i for i in filtered if _passes(stage2[i], lam)}
    assert back, "no filtered row passes after training: raise the learning rate"
    kept2 = {i for i, s in stage2.items() if _passes(s, lam)}
    assert set(after.stage_train) <= kept2 and (set(after.stage_train) | set(after.pool)) >= back
    assert not (filtered - back) & set(after.stage_train)
