"""The hierarchy-start calibration survives failed nodes: histograms are asked only of nodes whose
score query succeeded, a round where every histogram reply fails keeps the previous lambda (or
trains unfiltered before any lambda exists) instead of crashing the ServerApp."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import HISTOGRAM_QUERY, SCORE_QUERY, FedDQCStrategy
from tests.helpers import make_config

BINS = 4


pytestmark = pytest.mark.usefixtures("server_task_identity")


class ScriptedGrid:
    """Answers score and histogram queries per node; `failing` maps message type -> failing nodes."""

    def __init__(self, nodes: list[int], failing: dict[str, set[int]]) -> None:
        self.nodes, self.failing = nodes, failing
        self.asked: dict[str, list[int]] = {}

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            kind, node = msg.metadata.message_type, msg.metadata.dst_node_id
            self.asked.setdefault(kind, []).append(node)
            if node in self.failing.get(kind, set()):
                replies.append(Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "boom"), reply_to=msg))
            elif kind == SCORE_QUERY:
                metrics = {"count": 4, "min": -1.0, "max": 1.0, "seconds": 0.1, "setup-seconds": 0.1}
                replies.append(Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg))
            else:
                metrics = {"counts": [1, 1, 1, 1], "bad-counts": [1, 1, 0, 0]}
                replies.append(Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg))
        assert [r.metadata.src_node_id for r in replies] == [m.metadata.dst_node_id for m in messages]
        return replies


def _strategy() -> FedDQCStrategy:
    cfg = make_config(histogram_bins=BINS, min_train_nodes=1, num_server_rounds=3, hierarchies=3)
    return FedDQCStrategy(build_base_strategy(cfg), cfg)


ARRAYS = ArrayRecord({"a.lora_A.weight": Array(np.zeros((2, 2), dtype=np.float32))})


def test_histograms_go_only_to_nodes_whose_scores_are_fresh() -> None:
    grid = ScriptedGrid([11, 12, 13], {SCORE_QUERY: {12}})
    strategy = _strategy()
    list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    assert grid.asked[HISTOGRAM_QUERY] == [11, 13]
    assert strategy.rounds[1].scoring["histogram-clients"] == 2
    assert sum(strategy.rounds[1].histogram["counts"]) == 8 and strategy.threshold is not None


def test_every_histogram_reply_failing_does_not_crash_and_keeps_lambda() -> None:
    grid = ScriptedGrid([11, 12], {HISTOGRAM_QUERY: {11, 12}})
    strategy = _strategy()
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))  # used to raise IndexError
    assert strategy.threshold is None and messages
    assert all(m.content["config"]["lambda"] == -math.inf for m in messages)  # unfiltered, and logged
    strategy.threshold = 0.25  # a lambda from an earlier hierarchy survives a failed calibration
    list(strategy.configure_train(2, ARRAYS, ConfigRecord(), grid))
    assert strategy.threshold == 0.25 and strategy.rounds[2].histogram == {}
