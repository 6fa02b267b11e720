"""A Grid that collects replies at a short poll interval instead of Flower's 3 s sleep.

Flower's deployment grid (`HttpGrid.send_and_receive`, flwr 1.41) sleeps 3 s between pulls,
so every round trip ends up to 3 s after its last reply arrived. This wrapper keeps the wrapped
grid for everything and replaces only that wait: it pushes with the public `push_messages` and
pulls with `pull_messages` every `pull_interval` seconds. `Strategy.start` calls
`grid.send_and_receive` itself, so wrapping the grid once covers the train and evaluate rounds
as well as the app's own queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class PollingGrid(Grid):
    """Delegates to `grid`; `send_and_receive` polls for replies every `pull_interval` seconds."""

    def __init__(self, grid: Grid, pull_interval: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if pull_interval <= 0:
            raise ValueError(f"pull_interval = {pull_interval}: must be > 0")
        self.grid, self.pull_interval = grid, pull_interval
        self._clock, self._sleep = clock, sleep

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply came or `timeout` seconds passed (None: no limit).

        Same contract as Flower's grids: replies in arrival order, none after the timeout. A
        message the grid could not push (its id is None) can never be answered, so it is not
        waited for.
        """
        pending = {mid for mid in self.push_messages(messages) if mid is not None}
        end = self._clock() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while pending and (timeout is None or self._clock() < end):
            received = list(self.pull_messages(pending))
            replies.extend(received)
            pending.difference_update(m.metadata.reply_to_message_id for m in received)
            if pending:
                wait = self.pull_interval if timeout is None else min(self.pull_interval, end - self._clock())
                self._sleep(max(0.0, wait))
        return replies
