"""The hierarchy-start calibration: one query, and only before the first lambda exists.

With threshold-mode = retention the first hierarchy asks every node once (`query.score`); the
replies' bin counts give lambda and the global histogram. Later hierarchies, and every hierarchy
with an absolute lambda, send no query: clients score inside train and the train replies' counts
give the histogram. A round whose score replies all fail trains unfiltered (or keeps the
previous lambda) instead of crashing the ServerApp."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.protocol import REFERENCE_KEY, SKETCH_KEY
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import SCORE_QUERY, FedDQCStrategy
from feddqc_flwr.selection.score_sketch import ScoreSketch, bin_index, criteria_record, lower_edges
from tests.helpers import make_config

BINS = 200
SCORES = np.array([-2.0, -1.0, 0.5, 3.0])  # every node's fresh scores; the first two are corrupted rows
BAD = np.array([True, True, False, False])


pytestmark = pytest.mark.usefixtures("server_task_identity")


def _sketch(columns: dict[str, np.ndarray] | None = None) -> ConfigRecord:
    """One reply's counts, one histogram per criterion: by default one criterion, ira, scoring SCORES
    with BAD flags; given columns carry no corrupted rows."""
    if columns is None:
        return ConfigRecord(criteria_record({"ira": ScoreSketch.of(SCORES, BAD, BINS)}))
    return ConfigRecord(criteria_record({name: ScoreSketch.of(v, np.zeros(len(v), bool), BINS)
                                         for name, v in columns.items()}))


class ScriptedGrid:
    """Answers score queries per node; `failing` maps message type -> failing nodes."""

    def __init__(self, nodes: list[int], failing: dict[str, set[int]],
                 columns: dict[str, np.ndarray] | None = None) -> None:
        self.nodes, self.failing, self.columns = nodes, failing, columns
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
            else:
                assert kind == SCORE_QUERY, kind
                metrics = {"count": len(SCORES), "seconds": 0.1, "setup-seconds": 0.1}
                replies.append(Message(RecordDict({"metrics": MetricRecord(metrics),
                                                   SKETCH_KEY: _sketch(self.columns)}),
                                       reply_to=msg))
        assert [r.metadata.src_node_id for r in replies] == [m.metadata.dst_node_id for m in messages]
        return replies


def _strategy(**overrides) -> FedDQCStrategy:
    overrides = {"scorer": "ira", **overrides}
    cfg = make_config(histogram_bins=BINS, min_train_nodes=1, num_server_rounds=3, hierarchies=3, **overrides)
    return FedDQCStrategy(build_base_strategy(cfg), cfg)


ARRAYS = ArrayRecord({"a.lora_A.weight": Array(np.zeros((2, 2), dtype=np.float32))})


def _train_reply(msg: Message, scored: bool) -> Message:
    """A client's train reply; one that scored its pool in this message sends its bin counts."""
    content = RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 4})})
    if scored:
        content[SKETCH_KEY] = _sketch()
    return Message(content, reply_to=msg)


def test_one_query_before_the_first_lambda_and_none_after() -> None:
    grid = ScriptedGrid([11, 12, 13], {SCORE_QUERY: {12}})
    strategy = _strategy(retention=0.5)
    for server_round in (1, 2, 3):  # three hierarchies of one round each
        list(strategy.configure_train(server_round, ARRAYS, ConfigRecord(), grid))
    assert grid.asked == {SCORE_QUERY: [11, 12, 13]}  # the old protocol asked 6 messages per hierarchy
    first = strategy.rounds[1]
    assert first.scoring["clients"] == 2 and sum(first.histogram["counts"]) == 8  # nodes 11 and 13
    assert sum(first.histogram["bad"]) == 4
    # retention 0.5 of 8 scores (two of each value): the 4th largest is 0.5, so lambda is the lower
    # edge of 0.5's bin, within 1 % of it
    assert 0.5 / 1.01 - 1e-9 <= strategy.threshold <= 0.5
    assert first.scoring["share-above-lambda"] == 0.5 and first.scoring["auroc"] == 1.0
    assert strategy.rounds[2].threshold == strategy.rounds[3].threshold == strategy.threshold


def test_an_absolute_lambda_needs_no_query_and_train_replies_give_the_histogram() -> None:
    grid = ScriptedGrid([11, 12], {})
    strategy = _strategy(threshold_mode="lambda", scorer="ira", ira_lambda=0.0)
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    # lambda 0 lies in the zero bin [-1e-9, 1e-9): clients get its lower edge, as the server counts bins
    assert grid.asked == {} and all(list(m.content["config"]["lambda"]) == [-1e-9] for m in messages)
    arrays, _ = strategy.aggregate_train(1, [_train_reply(messages[0], True), _train_reply(messages[1], True)])
    entry = strategy.rounds[1]
    assert arrays is not None and entry.scoring["clients"] == 2 and entry.scoring["scored"] == 8
    assert sum(entry.histogram["counts"]) == 8 and entry.scoring["share-above-lambda"] == 0.5
    assert entry.scoring["removal-recall"] == 1.0  # both corrupted scores per node are under lambda = 0


def test_train_replies_after_a_query_do_not_count_twice() -> None:
    grid = ScriptedGrid([11], {})
    strategy = _strategy()
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    strategy.aggregate_train(1, [_train_reply(messages[0], True)])  # a late scorer's counts: not added
    assert sum(strategy.rounds[1].histogram["counts"]) == 4 and strategy.rounds[1].scoring["clients"] == 1


def test_every_score_reply_failing_does_not_crash_and_trains_unfiltered() -> None:
    grid = ScriptedGrid([11, 12], {SCORE_QUERY: {11, 12}})
    strategy = _strategy()
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    assert strategy.threshold is None and messages
    assert all(list(m.content["config"]["lambda"]) == [-math.inf] for m in messages)  # unfiltered, and logged
    assert strategy.rounds[1].histogram == {} and strategy.rounds[1].scoring["clients"] == 0
    list(strategy.configure_train(2, ARRAYS, ConfigRecord(), grid))  # no lambda yet: the next hierarchy asks again
    assert grid.asked[SCORE_QUERY] == [11, 12, 11, 12]


@pytest.mark.parametrize("fraction_train", [1.0, 0.5])
def test_anchor_rows_go_with_every_message_that_may_score(fraction_train: float) -> None:
    """nuggets/datainf score against the server's anchor rows: the query carries them, and so does
    every train message: with sampling a client can meet a hierarchy first in its second round, and
    a SuperNode restarted mid-stage has lost them and scores inside its next train message."""
    expected = {1: True, 2: True, 3: True}
    grid = ScriptedGrid([11, 12], {})
    cfg = make_config(histogram_bins=BINS, min_train_nodes=1, num_server_rounds=4, hierarchies=2,
                      fraction_train=fraction_train, scorer="ira")
    anchors = [{"instruction": "a", "input": "", "response": "b"}]
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg, anchors)
    # which nodes are sampled does not matter here (test_seeded_sampling covers it): take them all
    strategy.sampling = SimpleNamespace(nodes=lambda grid, query, server_round, kind: grid)
    sent = {r: list(strategy.configure_train(r, ARRAYS, ConfigRecord(), grid)) for r in (1, 2, 3)}
    carries = {r: bool(messages) and all(REFERENCE_KEY in m.content["config"] for m in messages)
               for r, messages in sent.items()}
    assert carries == expected and grid.asked[SCORE_QUERY] == [11, 12]
    assert json.loads(sent[3][0].content["config"][REFERENCE_KEY]) == anchors


def test_two_criteria_each_get_their_own_lambda_from_their_own_histogram() -> None:
    """retention 0.49 over two criteria: each keeps 0.7 of its own histogram. 3 nodes x 10 rows;
    alignment scores 1..10 and fit scores -10..-1 (one row per bin at 200 bins): 0.7 of 30 is 21,
    so alignment's lambda is the lower edge of 4's bin (rows 4..10 on each node) and fit's of -7's."""
    columns = {"ira-sum": np.arange(1.0, 11.0), "loss": -np.arange(10.0, 0.0, -1.0)}
    grid = ScriptedGrid([11, 12, 13], {}, columns)
    strategy = _strategy(scorer="ira-sum+loss", retention=0.49)
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    edge = {v: float(lower_edges(bin_index(np.array([v]), BINS), BINS)[0]) for v in (4.0, -7.0)}
    assert strategy.thresholds == {"ira-sum": edge[4.0], "loss": edge[-7.0]}
    assert 4.0 / 1.01 <= edge[4.0] <= 4.0 and -7.0 * 1.01 <= edge[-7.0] <= -7.0
    assert all(list(m.content["config"]["lambda"]) == [edge[4.0], edge[-7.0]] for m in messages)
    entry = strategy.rounds[1]
    assert set(entry.criteria) == {"ira-sum", "loss"}
    assert entry.criteria["ira-sum"]["summary"]["share-above-lambda"] == pytest.approx(0.7)
    assert entry.criteria["loss"]["summary"]["share-above-lambda"] == pytest.approx(0.7)
    assert entry.threshold == edge[4.0] and entry.histogram == entry.criteria["ira-sum"]["histogram"]


def test_a_named_lambda_inside_a_bin_is_sent_as_that_bins_lower_edge() -> None:
    """lambda between the lower edge e of 0.5's bin and 0.5: a client comparing 0.5 >= lambda keeps the row,
    while the server, which sees only bins, could not count it. The strategy sends e instead, so both
    count 0.5 and 3.0 (2 of each node's 4 rows) as kept."""
    e = float(lower_edges(bin_index(np.array([0.5]), BINS), BINS)[0])
    assert e < 0.5
    grid = ScriptedGrid([11, 12], {})
    strategy = _strategy(threshold_mode="lambda", ira_lambda=(e + 0.5) / 2)
    messages = list(strategy.configure_train(1, ARRAYS, ConfigRecord(), grid))
    assert strategy.thresholds == {"ira": e} and all(list(m.content["config"]["lambda"]) == [e] for m in messages)
    strategy.aggregate_train(1, [_train_reply(messages[0], True), _train_reply(messages[1], True)])
    assert strategy.rounds[1].scoring["share-above-lambda"] == 0.5 == float((SCORES >= e).mean())
