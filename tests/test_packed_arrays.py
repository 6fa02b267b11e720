"""Adapters travel packed into one array: the round trip is exact, Flower's object count drops,
and both edges (the ServerApp's grid, the ClientApp's outermost mod) pack and unpack."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata
from flwr.clientapp import ClientApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from feddqc_flwr.app.packed_arrays import (
    LAYOUT_SUFFIX,
    PACKED_ARRAY,
    pack_content,
    pack_record,
    packing_mod,
    unpack_content,
    unpack_record,
)
from feddqc_flwr.app.polling_grid import PollingGrid
from tests.helpers import PushPullGrid

pytestmark = pytest.mark.usefixtures("server_task_identity")


def _record() -> ArrayRecord:
    return ArrayRecord({
        "b.lora_B": Array(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)),  # 16 bytes
        "a.lora_A": Array(np.array([0.5, -1.5, 2.25], dtype=np.float16)),  # 6 bytes
        "c.bias": Array(np.array([[[7]]], dtype=np.int64)),  # 8 bytes
        "d.scale": Array(np.array(0.25, dtype=np.float32)),  # 0-d, 4 bytes
    })


def _server_message(content: RecordDict) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m-{time.monotonic_ns()}", src_node_id=0, dst_node_id=7,
                        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=3600.0,
                        message_type="train")
    return Message(content=content, metadata=metadata)


def test_round_trip_keeps_names_order_dtypes_and_values() -> None:
    packed, layout = pack_record(_record())
    assert list(packed) == [PACKED_ARRAY]
    data = packed[PACKED_ARRAY].numpy()
    assert data.dtype == np.uint8 and data.size == 16 + 6 + 8 + 4
    assert np.array_equal(data[:16].view(np.float32), [1.0, 2.0, 3.0, 4.0])  # the first array's bytes come first
    back = unpack_record(packed, layout)
    assert list(back) == ["b.lora_B", "a.lora_A", "c.bias", "d.scale"]
    assert back["d.scale"].numpy().shape == () and float(back["d.scale"].numpy()) == 0.25
    assert back["b.lora_B"].numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert back["a.lora_A"].numpy().dtype == np.float16 and back["a.lora_A"].numpy().tolist() == [0.5, -1.5, 2.25]
    assert back["c.bias"].numpy().shape == (1, 1, 1) and back["c.bias"].numpy().dtype == np.int64
    assert int(back["c.bias"].numpy().item()) == 7


def test_a_layout_that_does_not_match_the_bytes_is_an_error() -> None:
    packed, layout = pack_record(_record())
    entries = json.loads(str(layout["layout"]))
    longer = ConfigRecord({"layout": json.dumps([*entries, ["extra", "<f4", [1]]])})
    with pytest.raises(ValueError, match="extra needs bytes 34..38, only 34 sent"):
        unpack_record(packed, longer)
    with pytest.raises(ValueError, match="layout covers 16 bytes, 34 sent"):
        unpack_record(packed, ConfigRecord({"layout": json.dumps(entries[:1])}))
    with pytest.raises(ValueError, match="expected one uint8 vector, got float32"):
        unpack_record(ArrayRecord({PACKED_ARRAY: Array(np.zeros(34, dtype=np.float32))}), layout)


def test_a_lora_adapter_becomes_a_handful_of_flower_objects() -> None:
    """Flower moves each object with a request of its own: 120 matrices were >= 240 objects."""
    adapter = ArrayRecord({f"layer{i}.lora_{'AB'[i % 2]}": Array(np.full((8, 64), i, dtype=np.float32))
                           for i in range(120)})
    content = RecordDict({"arrays": adapter, "config": ConfigRecord({"server-round": 1})})
    plain = len(get_all_nested_objects(_server_message(content)))
    packed = len(get_all_nested_objects(_server_message(pack_content(content))))
    # message + RecordDict + ArrayRecord + 120 x (Array + its one chunk) + ConfigRecord
    assert plain == 1 + 1 + 1 + 120 * 2 + 1
    assert packed == 1 + 1 + 1 + 2 + 1 + 1  # ... + one Array and chunk + ConfigRecord + the layout
    back = unpack_content(pack_content(content))
    assert list(back) == ["arrays", "config"]
    assert [float(back["arrays"][f"layer{i}.lora_{'AB'[i % 2]}"].numpy()[3, 5]) for i in (0, 77, 119)] == [0, 77, 119]


def test_records_that_gain_nothing_pass_through_unchanged() -> None:
    single = ArrayRecord({"only": Array(np.ones(3, dtype=np.float32))})
    content = RecordDict({"arrays": single, "metrics": MetricRecord({"num-examples": 4})})
    packed = pack_content(content)
    assert list(packed) == ["arrays", "metrics"]
    assert list(packed["arrays"]) == ["only"]


def test_client_mod_hands_the_handler_the_adapter_and_packs_its_reply() -> None:
    app = ClientApp(mods=[packing_mod])
    seen: list[list[str]] = []

    @app.train()
    def double(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]
        seen.append(list(arrays))
        doubled = ArrayRecord({k: Array(np.asarray(a.numpy() * 2)) for k, a in arrays.items()})
        return Message(RecordDict({"arrays": doubled, "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    reply = app(_server_message(pack_content(RecordDict({"arrays": _record()}))), context)
    assert seen == [["b.lora_B", "a.lora_A", "c.bias", "d.scale"]]
    assert list(reply.content["arrays"]) == [PACKED_ARRAY] and "arrays" + LAYOUT_SUFFIX in reply.content
    back = unpack_content(reply.content)["arrays"]
    assert back["b.lora_B"].numpy().tolist() == [[2.0, 4.0], [6.0, 8.0]]
    assert back["a.lora_A"].numpy().tolist() == [1.0, -3.0, 4.5]
    assert back["c.bias"].numpy().item() == 14


class EchoGrid(PushPullGrid):
    """Keeps what was pushed; `reply` decides what each pulled reply holds."""

    def __init__(self, reply) -> None:
        self.pushed: list[Message] = []
        self.reply = reply

    def get_node_ids(self) -> list[int]:
        return [7]

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{len(self.pushed)}"
            self.pushed.append(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [Message(self.reply(self.pushed[int(mid[1:])].content), reply_to=self.pushed[int(mid[1:])])
                for mid in message_ids]

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("PollingGrid waits with its own loop")


def test_grid_sends_packed_and_hands_back_unpacked() -> None:
    grid = EchoGrid(lambda content: RecordDict({"arrays": content["arrays"], "arrays" + LAYOUT_SUFFIX:
                                                content["arrays" + LAYOUT_SUFFIX],
                                                "metrics": MetricRecord({"num-examples": 2})}))
    polling = PollingGrid(grid, 0.01)
    message = Message(RecordDict({"arrays": _record()}), dst_node_id=7, message_type="train")
    [reply] = polling.send_and_receive([message])
    assert list(grid.pushed[0].content["arrays"]) == [PACKED_ARRAY]
    assert list(reply.content) == ["arrays", "metrics"]
    assert list(reply.content["arrays"]) == ["b.lora_B", "a.lora_A", "c.bias", "d.scale"]
    assert reply.content["arrays"]["a.lora_A"].numpy().tolist() == [0.5, -1.5, 2.25]


def test_grid_turns_a_reply_that_does_not_unpack_into_an_error_reply() -> None:
    def truncated(content: RecordDict) -> RecordDict:
        data = content["arrays"][PACKED_ARRAY].numpy()[:20]
        return RecordDict({"arrays": ArrayRecord({PACKED_ARRAY: Array(data)}),
                           "arrays" + LAYOUT_SUFFIX: content["arrays" + LAYOUT_SUFFIX]})

    polling = PollingGrid(EchoGrid(truncated), 0.01)
    [reply] = polling.send_and_receive([Message(RecordDict({"arrays": _record()}), dst_node_id=7,
                                                message_type="train")])
    assert reply.has_error() and "could not be unpacked" in reply.error.reason


def test_grid_packs_a_record_shared_by_every_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import feddqc_flwr.app.packed_arrays as packed_arrays

    calls: list[int] = []
    real_pack = packed_arrays.pack_record
    monkeypatch.setattr(packed_arrays, "pack_record", lambda record: calls.append(len(record)) or real_pack(record))
    grid = EchoGrid(lambda content: RecordDict())
    shared = _record()
    messages = [Message(RecordDict({"arrays": shared}), dst_node_id=7, message_type="train") for _ in range(3)]
    assert len(list(PollingGrid(grid, 0.01).push_messages(messages))) == 3
    assert calls == [4]  # FedAvg's one global adapter for every sampled node: packed once
    for msg in grid.pushed:
        back = unpack_record(msg.content["arrays"], msg.content["arrays" + LAYOUT_SUFFIX])
        assert back["b.lora_B"].numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_the_push_cache_keeps_each_packed_record_alive_so_its_address_is_not_reused() -> None:
    """Once packed, a message's original record has no other owner; were it freed, a record built
    later in the same push could get its address and be handed the first one's bytes."""
    import gc
    import weakref

    cache: dict = {}
    record = ArrayRecord({"x": Array(np.zeros(3, dtype=np.float32)), "y": Array(np.ones(2, dtype=np.float32))})
    alive = weakref.ref(record)
    pack_content(RecordDict({"arrays": record}), cache)
    del record
    gc.collect()
    assert alive() is not None
    cache.clear()
    gc.collect()
    assert alive() is None  # nothing else held it: the cache did
