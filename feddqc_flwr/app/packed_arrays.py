"""Adapters travel as one array per message instead of one per LoRA matrix.

Flower 1.41 stores and moves every `Array` (and each chunk of it) as an object of its own, one
request per object on every hop (ServerApp -> SuperLink -> SuperNode -> ClientApp and back):
SmolLM2's LoRA adapter is 120 matrices, so each message took about 240 object requests per hop.
Packing an `ArrayRecord` into one uint8 array (its layout in a `ConfigRecord` beside it) makes
that a handful. Packing happens only at the edges, the ServerApp's grid (`PollingGrid`) and the
outermost ClientApp mod (`packing_mod`), so strategies, Flower's DP wrappers and the client's
clipping mods see the usual record, name for name and in the same order.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

PACKED_ARRAY = "packed"
LAYOUT_SUFFIX = ".packed-layout"  # the ConfigRecord `<record name>.packed-layout` describes the bytes


def pack_record(record: ArrayRecord) -> tuple[ArrayRecord, ConfigRecord]:
    """One uint8 array holding every array's bytes in order, and the names, dtypes and shapes."""
    parts, layout = [], []
    for name, array in record.items():
        values = np.asarray(array.numpy(), order="C")  # keeps 0-d arrays 0-d
        parts.append(values.reshape(-1).view(np.uint8))
        layout.append([name, values.dtype.str, list(values.shape)])
    data = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    return ArrayRecord({PACKED_ARRAY: Array(data)}), ConfigRecord({"layout": json.dumps(layout)})


def unpack_record(packed: ArrayRecord, layout: ConfigRecord) -> ArrayRecord:
    """The record `pack_record` packed; a size mismatch is an error, never a silent truncation."""
    data = packed[PACKED_ARRAY].numpy()
    if data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError(f"packed arrays: expected one uint8 vector, got {data.dtype} of shape {data.shape}")
    arrays, offset = {}, 0
    for name, dtype_str, shape in json.loads(str(layout["layout"])):
        dtype = np.dtype(dtype_str)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + size > data.size:
            raise ValueError(f"packed arrays: {name} needs bytes {offset}..{offset + size}, only {data.size} sent")
        arrays[name] = Array(data[offset:offset + size].view(dtype).reshape(shape))
        offset += size
    if offset != data.size:
        raise ValueError(f"packed arrays: layout covers {offset} bytes, {data.size} sent")
    return ArrayRecord(arrays)


PackCache = dict[int, tuple[ArrayRecord, ArrayRecord, ConfigRecord]]  # id -> (record, packed, layout)


def pack_content(content: RecordDict, cache: PackCache | None = None) -> RecordDict:
    """The same records, every ArrayRecord of two or more arrays packed (one array gains nothing).

    `cache` (keyed by record identity; it holds each record, so an id is never reused while it
    lives) packs a record shared by many messages, the global adapter a strategy sends to every
    sampled node, once instead of once per node.
    """
    cache = {} if cache is None else cache
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord) and len(record) > 1:
            if id(record) not in cache:
                cache[id(record)] = (record, *pack_record(record))
            out[key], out[key + LAYOUT_SUFFIX] = cache[id(record)][1:]
        else:
            out[key] = record
    return out


def unpack_content(content: RecordDict) -> RecordDict:
    """The records as they were before `pack_content`, in their original order."""
    out = RecordDict()
    for key, record in content.items():
        if key.endswith(LAYOUT_SUFFIX) and key.removesuffix(LAYOUT_SUFFIX) in content:
            continue  # read below, with the record it describes
        layout = content.get(key + LAYOUT_SUFFIX)
        if layout is None or not isinstance(record, ArrayRecord):
            out[key] = record
            continue
        if not isinstance(layout, ConfigRecord):
            raise TypeError(f"packed arrays: {key}{LAYOUT_SUFFIX} is a {type(layout).__name__}, not a ConfigRecord")
        out[key] = unpack_record(record, layout)
    return out


def pack_message(msg: Message, cache: PackCache | None = None) -> Message:
    """Pack `msg`'s content in place (messages carrying an error have none) and return it."""
    if msg.has_content():
        msg.content = pack_content(msg.content, cache)
    return msg


def unpack_message(msg: Message) -> Message:
    """Unpack `msg`'s content in place and return it."""
    if msg.has_content():
        msg.content = unpack_content(msg.content)
    return msg


def packing_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod (the outermost): unpack what the server sent, pack the reply."""
    return pack_message(call_next(unpack_message(msg), ctxt))
