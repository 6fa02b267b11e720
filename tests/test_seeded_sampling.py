"""A seeded run with fraction-train < 1 samples the same clients every time, although Flower's
node ids are random per run and come back from the grid in no fixed order."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from feddqc_flwr.app.client_app import app
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from tests.helpers import make_config

CLIENTS = 5


pytestmark = pytest.mark.usefixtures("server_task_identity")


class SimulatedGrid:
    """Fresh random node ids per run, listed as a set; identity queries answered by the real ClientApp."""

    def __init__(self, id_seed: int) -> None:
        ids = random.Random(id_seed).sample(range(1, 2**62), CLIENTS)
        self.partition_of = dict(zip(ids, range(CLIENTS), strict=True))
        self.asked = 0

    def get_node_ids(self) -> set[int]:
        return set(self.partition_of)

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            self.asked += 1
            metadata = Metadata(run_id=1, message_id=f"m-{time.monotonic_ns()}", src_node_id=0, dst_node_id=node,
                                reply_to_message_id="", group_id="1", created_at=time.time(), ttl=3600.0,
                                message_type=msg.metadata.message_type)
            context = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                              node_config={"partition-id": self.partition_of[node], "num-partitions": CLIENTS})
            replies.append(app(Message(content=msg.content, metadata=metadata), context))
        return replies


def _sampled_partitions(seed: int, id_seed: int, rounds: int = 4) -> list[list[int]]:
    cfg = make_config(method="fedavg", fraction_train=0.4, min_train_nodes=2, seed=seed)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    grid = SimulatedGrid(id_seed)
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    out = []
    for server_round in range(1, rounds + 1):
        random.seed(1000 * id_seed + server_round)  # whatever else used `random` in this process
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        out.append(sorted(grid.partition_of[m.metadata.dst_node_id] for m in messages))
    assert grid.asked == CLIENTS  # each node is asked for its partition once, not every round
    return out


def test_same_seed_samples_the_same_clients_in_a_new_run() -> None:
    first, second = _sampled_partitions(seed=3, id_seed=1), _sampled_partitions(seed=3, id_seed=2)
    assert first == second
    assert all(len(p) == 2 for p in first) and len({tuple(p) for p in first}) > 1  # sampled, not fixed
    assert _sampled_partitions(seed=4, id_seed=1) != first
