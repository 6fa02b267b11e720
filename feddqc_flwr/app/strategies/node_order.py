"""Reproducible client sampling: the same seed samples the same clients in every run.

Flower's strategies sample with Python's `random.sample` over `grid.get_node_ids()`. Seeding
`random` is not enough: node ids are random per run (simulation draws them at start), and the
grid returns them as a set, so the same positions would name different clients. The server asks
each node once for its `partition-id` (`query.identity`: a node-config number, no data), lists
nodes in partition order and seeds `random` per round and phase before Flower samples.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

log = logging.getLogger("flwr").getChild(__name__)

IDENTITY = "query.identity"
Query = Callable[[Grid, str, RecordDict, list[int]], list[Message]]


class OrderedNodes:
    """Only the part of a Grid that Flower's configure_train/configure_evaluate use, in partition order."""

    def __init__(self, grid: Grid, partition_of: dict[int, int]) -> None:
        self.grid, self.partition_of = grid, partition_of

    def get_node_ids(self) -> list[int]:
        unknown = float("inf")  # a node that did not answer goes last, by id
        return sorted(self.grid.get_node_ids(), key=lambda n: (self.partition_of.get(n, unknown), n))


class SeededSampling:
    """Seeds Flower's node sampling per (round, phase) over nodes listed in partition order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.partition_of: dict[int, int] = {}

    def nodes(self, grid: Grid, query: Query, server_round: int, phase: str) -> Grid:
        """The grid view to hand to the base strategy; asks unknown nodes for their partition first."""
        unknown = [n for n in grid.get_node_ids() if n not in self.partition_of]
        if unknown:
            replies = query(grid, IDENTITY, RecordDict({"config": ConfigRecord({})}), unknown)
            self.partition_of.update(_partitions(replies))
        random.seed(f"{self.seed}/{phase}/{server_round}")
        return OrderedNodes(grid, self.partition_of)  # type: ignore[return-value]  # duck-typed Grid view


def _partitions(replies: Iterable[Message]) -> dict[int, int]:
    return {r.metadata.src_node_id: int(r.content["metrics"]["partition-id"]) for r in replies}
