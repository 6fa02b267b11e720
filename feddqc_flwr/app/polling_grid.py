"""A Grid that collects replies at a short poll interval instead of Flower's 3 s sleep.

Flower's deployment grid (`HttpGrid.send_and_receive`, flwr 1.41) sleeps 3 s between pulls,
so every round trip ends up to 3 s after its last reply arrived. This wrapper keeps the wrapped
grid for everything and replaces only that wait: it pushes with the public `push_messages` and
pulls with `pull_messages` every `pull_interval` seconds. `Strategy.start` calls
`grid.send_and_receive` itself, so wrapping the grid once covers the train and evaluate rounds
as well as the app's own queries. It is also where the server's side of `packed_arrays` sits:
messages leave with their adapter packed into one array and replies come back unpacked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from feddqc_flwr.app.packed_arrays import PackCache, pack_message, unpack_message

log = logging.getLogger("flwr").getChild(__name__)


def _unpacked_or_error(msg: Message) -> Message:
    """The reply unpacked; one whose packed arrays do not match their layout becomes an error reply,
    so the strategy counts it as a failure instead of the run stopping."""
    try:
        return unpack_message(msg)
    except (ValueError, TypeError, KeyError) as exc:
        reason = f"reply from node {msg.metadata.src_node_id} could not be unpacked: {exc}"
        log.error(reason)
        return Message(metadata=msg.metadata, error=Error(code=ErrorCode.UNKNOWN, reason=reason))


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
        cache: PackCache = {}  # one push: the global adapter shared by every message is packed once
        return self.grid.push_messages([pack_message(msg, cache) for msg in messages])

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [_unpacked_or_error(msg) for msg in self.grid.pull_messages(message_ids)]

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
