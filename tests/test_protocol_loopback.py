"""The whole protocol in one process: Flower's `Strategy.start` drives the FedDQC strategy through
the polling grid, and every message runs the real ClientApp handlers of two nodes (tiny model,
demo data). Counts the messages per type and checks lambda against the clients' own scores."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from feddqc_flwr.app.client_app import app
from feddqc_flwr.app.client_progress import ClientProgress
from feddqc_flwr.app.config import parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.polling_grid import PollingGrid
from feddqc_flwr.app.protocol import SCORE_QUERY
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle
from tests.helpers import PushPullGrid, default_run_config

NODES = {101: 0, 202: 1}  # node id -> partition id

pytestmark = pytest.mark.usefixtures("server_task_identity")


class LoopbackGrid(PushPullGrid):
    """Each pushed message runs the node's ClientApp at once; its reply waits to be pulled."""

    def __init__(self, run_config: dict) -> None:
        self.contexts = {node: Context(run_id=1, node_id=node, state=RecordDict(), run_config=run_config,
                                       node_config={"partition-id": pid, "num-partitions": len(NODES)})
                         for node, pid in NODES.items()}
        self.sent: Counter[str] = Counter()
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(NODES)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            mid = f"m{sum(self.sent.values())}"
            self.sent[msg.metadata.message_type] += 1
            metadata = Metadata(run_id=1, message_id=mid, src_node_id=0, dst_node_id=msg.metadata.dst_node_id,
                                reply_to_message_id="", group_id="1", created_at=time.time(), ttl=3600.0,
                                message_type=msg.metadata.message_type)
            self.replies[mid] = app(Message(content=msg.content, metadata=metadata),
                                    self.contexts[msg.metadata.dst_node_id])
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self.replies.pop(mid) for mid in list(message_ids) if mid in self.replies]

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("the ServerApp waits through PollingGrid, never the grid's own loop")


def _run(tiny_model_dir: Path, **overrides) -> tuple[FedDQCStrategy, LoopbackGrid, dict[int, np.ndarray]]:
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 1, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "num-server-rounds": 3, "hierarchies": 3, "min-train-nodes": 2, "fraction-evaluate": 0.0,
                "eval-samples": 0, **overrides})
    cfg = parse_run_config(raw)
    grid = LoopbackGrid(raw)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    first_scores: dict[int, np.ndarray] = {}

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round == 1:  # the stage-1 scores each client keeps (never sent)
            first_scores.update({n: ClientProgress.load(c.state, 0).score_matrix() for n, c in grid.contexts.items()})

    arrays = adapter_arrays(load_model_bundle(spec_from_config(cfg)).model)
    strategy.start(grid=PollingGrid(grid, 0.01), initial_arrays=arrays, num_rounds=3, timeout=600.0,
                   train_config=ConfigRecord(), evaluate_config=ConfigRecord(), evaluate_fn=after_round)
    return strategy, grid, first_scores


def test_retention_run_queries_once_and_lambda_is_within_one_bin(tiny_model_dir: Path) -> None:
    """Two criteria (the default ira-sum+loss), each keeping sqrt(0.5) of its own pooled scores:
    each lambda is the lower edge of the bin holding that criterion's exact quantile, and the rows
    the server counts at or above it are exactly the rows the clients kept by that criterion."""
    strategy, grid, first = _run(tiny_model_dir, retention=0.5)
    assert grid.sent == {SCORE_QUERY: 2, "train": 6}  # two query messages (the old protocol sent 12)
    share = math.sqrt(0.5)
    for c, name in enumerate(("ira-sum", "loss")):
        pooled = np.sort(np.concatenate([m[:, c] for m in first.values()]))[::-1]
        pooled = pooled[np.isfinite(pooled)]
        exact = pooled[max(1, math.ceil(share * len(pooled) - 1e-9)) - 1]
        lam = strategy.thresholds[name]
        assert lam <= exact and exact - lam <= 2 / 200 * abs(exact) + 1e-9  # the bin holding the quantile
        server_kept = strategy.rounds[1].criteria[name]["summary"]["share-above-lambda"] * len(pooled)
        assert round(server_kept) == (pooled >= lam).sum() == sum(c[f"kept-{name}"] for c in strategy.rounds[1].clients)
    both = sum(int(((m[:, 0] >= strategy.thresholds["ira-sum"]) & (m[:, 1] >= strategy.thresholds["loss"])).sum())
               for m in first.values())
    assert sum(c["kept"] for c in strategy.rounds[1].clients) == both
    for server_round in (1, 2, 3):  # a histogram at every hierarchy start: query, then train replies
        entry = strategy.rounds[server_round]
        assert entry.thresholds == strategy.thresholds and entry.threshold == strategy.thresholds["ira-sum"]
        assert sum(entry.histogram["counts"]) == sum(c["pool"] for c in entry.clients) > 0, server_round
    assert sum(strategy.rounds[1].histogram["counts"]) == sum(len(m) for m in first.values())


def test_absolute_lambda_run_sends_no_query(tiny_model_dir: Path) -> None:
    strategy, grid, _ = _run(tiny_model_dir, **{"threshold-mode": "lambda", "scorer": "ira", "ira-lambda": 0.0})
    assert grid.sent == {"train": 6}
    assert all(sum(strategy.rounds[r].histogram["counts"]) == sum(c["pool"] for c in strategy.rounds[r].clients)
               for r in (1, 2, 3))
