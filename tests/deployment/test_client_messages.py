"""What a ClientApp sends: every reply of the protocol, inspected on the wire format.

The ClientApp is driven in-process with the messages the server sends (score query, train,
evaluate), so every reply can be serialized exactly as the SuperNode does and searched for the
client's text and token ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import message_to_proto

from feddqc_flwr.app.config import parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.protocol import SKETCH_KEY
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.llm.model import adapter_arrays, cast_arrays, load_model_bundle
from feddqc_flwr.training.local_sft import encode_for_training
from tests.helpers import default_run_config, deliver

BINS = 16


pytestmark = pytest.mark.usefixtures("client_task_identity")


@pytest.fixture()
def client(tiny_model_dir: Path) -> tuple[Context, ArrayRecord]:
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 2, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "histogram-bins": BINS})
    cfg = parse_run_config(raw)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=raw)
    return context, adapter_arrays(load_model_bundle(spec_from_config(cfg)).model)


def _train(context: Context, arrays: ArrayRecord, lr: float, rescore: bool = True) -> Message:
    # rescore: round 1 starts hierarchy 1 (a client that has not scored yet scores inside train)
    config = ConfigRecord({"server-round": 1, "hierarchy": 1, "rescore": rescore, "lr": lr, "lambda": [-1e9, -1e9]})
    return deliver(context, "train", RecordDict({"arrays": arrays, "config": config}))


def _client_texts(context: Context) -> list[str]:
    cfg = parse_run_config(context.run_config)
    data = load_client_data(cfg.data_spec, 0, 2)
    rows = list(data.train) + list(data.valid)
    return [s for row in rows for s in (row["instruction"], row["input"], row["response"]) if len(s) >= 12]


def test_no_text_or_token_ids_leave_the_client(client) -> None:
    context, arrays = client
    config = ConfigRecord({"server-round": 1, "hierarchy": 1})
    replies = {"query.score": deliver(context, "query.score", RecordDict({"arrays": arrays, "config": config}))}
    replies["train"] = _train(context, arrays, lr=1e-3)
    fresh = Context(run_id=1, node_id=7, node_config=dict(context.node_config), state=RecordDict(),
                    run_config=dict(context.run_config))
    replies["train (scores inside)"] = _train(fresh, arrays, lr=1e-3)  # no score query: lambda already known
    replies["evaluate"] = deliver(context, "evaluate", RecordDict({"arrays": arrays, "config": ConfigRecord()}))

    texts = _client_texts(context)
    cfg = parse_run_config(context.run_config)
    bundle = load_model_bundle(spec_from_config(cfg))
    token_rows = [list(map(int, ids)) for ids in encode_for_training(
        load_client_data(cfg.data_spec, 0, 2).train, bundle.tokenizer, cfg.prompt_template, cfg.max_length
    )["input_ids"]]
    assert texts and token_rows
    for kind, reply in replies.items():
        assert not reply.has_error(), (kind, reply.error)
        content = reply.content
        # clients send no free-form config back: only integer bin counts of fresh scores, when they scored
        scored = kind in ("query.score", "train (scores inside)")
        assert set(content.config_records) == ({SKETCH_KEY} if scored else set()), kind
        for key, value in content.config_records.get(SKETCH_KEY, {}).items():
            criterion, field = key.split("/")  # one histogram per criterion of the default scorer
            assert criterion in ("ira-sum", "loss") and field in ("bins", "counts", "bad-counts"), (kind, key)
            assert all(type(v) is int for v in value), (kind, key)
        for record in content.array_records.values():
            assert set(record) == set(arrays), kind  # exactly the LoRA adapter tensors
            assert all(a.dtype == "float32" for a in record.values()), kind
        for record in content.metric_records.values():
            for key, value in record.items():
                assert isinstance(value, int | float) and not isinstance(value, bool), (kind, key)
        wire = message_to_proto(reply).SerializeToString()
        for text in texts:
            assert text.encode() not in wire, (kind, text)
        for ids in token_rows:  # no run of 8 token ids, in any integer encoding numpy could use
            for dtype in ("<i8", "<i4", "<f4"):
                assert np.asarray(ids[:8], dtype=dtype).tobytes() not in wire, (kind, dtype)
    # sampled first in a later round of the hierarchy: it scores, but the server reads no sketch then
    late = Context(run_id=1, node_id=7, node_config=dict(context.node_config), state=RecordDict(),
                   run_config=dict(context.run_config))
    late_reply = _train(late, arrays, lr=1e-3, rescore=False)
    assert not late_reply.has_error() and SKETCH_KEY not in late_reply.content
    assert late_reply.content["metrics"]["pool"] > 0  # it did score and select
    for kind in ("query.score", "train (scores inside)"):  # every fresh score in one bin
        for criterion in ("ira-sum", "loss"):
            counts = replies[kind].content[SKETCH_KEY][f"{criterion}/counts"]
            assert sum(counts) == replies["query.score"].content["metrics"]["count"] > 0, (kind, criterion)


def test_nan_training_replies_an_error_not_weights(client) -> None:
    """A learning rate this large drives the LoRA weights to NaN/inf: the reply must be an Error."""
    context, arrays = client
    reply = _train(context, arrays, lr=1e30)
    assert reply.has_error() and not reply.has_content()
    assert "non-finite" in reply.error.reason


def test_fp16_transport_client_loads_fp32_and_replies_fp16(client) -> None:
    context, arrays = client
    context.run_config["transport-dtype"] = "float16"
    sent = cast_arrays(arrays, "float16")
    reply = _train(context, sent, lr=1e-3)
    assert not reply.has_error(), reply.error
    received = reply.content["arrays"]
    assert set(received) == set(arrays) and all(a.dtype == "float16" for a in received.values())
    bundle = load_model_bundle(spec_from_config(parse_run_config(context.run_config)))
    assert all(p.dtype == torch.float32 for n, p in bundle.model.named_parameters() if "lora_" in n)
    trained = adapter_arrays(bundle.model)  # the fp32 weights the reply was cast from
    for k, a in received.items():
        np.testing.assert_allclose(a.numpy().astype(np.float32), trained[k].numpy(), rtol=2 ** -11, atol=1e-7)
    raw = sum(a.numpy().nbytes for a in trained.values())
    assert trained.count_bytes() - received.count_bytes() == raw // 2
