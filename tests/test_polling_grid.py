"""The ServerApp's grid wrapper collects replies every `reply-poll-interval` seconds, not after
Flower's 3 s deployment sleep, keeps the timeout, and serves Flower's `Strategy.start` too.

Time is a fake clock that only `sleep` advances; replies become pullable at fixed times."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.superlink.grid import http_grid
from flwr.superlink.grid.http_grid import HttpGrid

from feddqc_flwr.app.polling_grid import PollingGrid
from tests.helpers import PushPullGrid

pytestmark = pytest.mark.usefixtures("server_task_identity")


class Clock:
    """Fake time: `sleep` records the duration and moves the clock on."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Link:
    """A SuperLink stand-in: the reply to the i-th pushed message is pullable from `ready[i]` on."""

    def __init__(self, clock: Clock, ready: list[float], nodes: Iterable[int] = ()) -> None:
        self.clock, self.ready, self.nodes = clock, ready, list(nodes)
        self.pushed: dict[str, tuple[Message, float]] = {}
        self.pulls = 0

    def push(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            mid = f"m{len(self.pushed)}"
            message.metadata.__dict__["_message_id"] = mid
            self.pushed[mid] = (message, self.ready[len(self.pushed)])
            ids.append(mid)
        return ids

    def pull(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        out = []
        for mid in message_ids:
            message, at = self.pushed[mid]
            if at <= self.clock.now:  # a client that sends back what it got (packed, with its layout)
                content = RecordDict({"metrics": MetricRecord({"num-examples": 1})})
                for key, record in message.content.items():
                    if key.startswith("arrays"):
                        content[key] = record
                out.append(Message(content, reply_to=message))
        return out


class LinkGrid(PushPullGrid):
    """A Grid on `Link` whose own `send_and_receive` must never run under the wrapper."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def get_node_ids(self) -> list[int]:
        return self.link.nodes

    def push_messages(self, messages):
        return self.link.push(messages)

    def pull_messages(self, message_ids):
        return self.link.pull(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("the wrapped grid's own send_and_receive was used")


def _queries(n: int) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=10 + i, message_type="query.identity") for i in range(n)]


def _http_grid(link: Link) -> HttpGrid:
    """Flower's deployment grid with its push/pull on the fake link (no SuperLink needed)."""
    grid = HttpGrid.__new__(HttpGrid)
    grid.push_messages, grid.pull_messages = link.push, link.pull
    return grid


def test_replies_come_at_the_poll_interval_not_after_flowers_3_s_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    stock_clock = Clock()
    monkeypatch.setattr(http_grid, "time", SimpleNamespace(time=stock_clock.time, sleep=stock_clock.sleep))
    stock = list(_http_grid(Link(stock_clock, [0.25, 0.42])).send_and_receive(_queries(2), timeout=None))
    assert len(stock) == 2 and stock_clock.sleeps == [3] and stock_clock.now == 3.0  # what the wrapper avoids

    clock = Clock()
    link = Link(clock, [0.25, 0.42])
    grid = PollingGrid(_http_grid(link), 0.1, clock=clock.time, sleep=clock.sleep)
    replies = list(grid.send_and_receive(_queries(2), timeout=None))
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert clock.sleeps == pytest.approx([0.1] * 5)  # pulls at 0, 0.1, ..., 0.5: the last reply is there at 0.5
    assert link.pulls == 6 and clock.now == pytest.approx(0.5)


def test_timeout_bounds_the_wait_and_returns_what_came() -> None:
    clock = Clock()
    link = Link(clock, [0.15, 99.0])  # the second node never answers in time
    grid = PollingGrid(LinkGrid(link), 0.1, clock=clock.time, sleep=clock.sleep)
    replies = list(grid.send_and_receive(_queries(2), timeout=1.0))
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert clock.now == pytest.approx(1.0)  # waited the timeout, not a poll interval beyond it
    # pulls at 0, 0.1, ..., 0.9, and one more if ten float steps of 0.1 sum to just under 1.0
    assert max(clock.sleeps) == pytest.approx(0.1) and link.pulls in (10, 11)

    clock = Clock()
    link = Link(clock, [0.0])
    grid = PollingGrid(LinkGrid(link), 0.1, clock=clock.time, sleep=clock.sleep)
    assert list(grid.send_and_receive(_queries(1), timeout=0.0)) == [] and link.pulls == 0  # as Flower's grids


def test_flowers_strategy_start_waits_through_the_wrapper() -> None:
    clock = Clock()
    link = Link(clock, [0.3, 0.3], nodes=[1, 2])
    grid = PollingGrid(LinkGrid(link), 0.1, clock=clock.time, sleep=clock.sleep)
    arrays = ArrayRecord({"w": Array(np.ones(2, dtype=np.float32)), "v": Array(np.full(3, 2.0, dtype=np.float32))})
    result = FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2).start(
        grid=grid, initial_arrays=arrays, num_rounds=1, timeout=60.0)
    assert list(link.pushed["m0"][0].content["arrays"]) == ["packed"]  # two arrays travel as one
    assert result.arrays["w"].numpy().tolist() == [1.0, 1.0] and result.arrays["v"].numpy().tolist() == [2.0] * 3
    assert len(link.pushed) == 2
    assert clock.sleeps == pytest.approx([0.1] * 3)


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pull_interval"):
        PollingGrid(LinkGrid(Link(Clock(), [])), 0.0)
