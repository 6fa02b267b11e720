"""Small builders shared by tests."""

from __future__ import annotations

import time
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.serverapp import Grid

from feddqc_flwr.app.client_app import app
from feddqc_flwr.app.config import RunConfig, parse_run_config
from feddqc_flwr.app.packed_arrays import pack_message, unpack_message
from feddqc_flwr.app.run_defaults import default_run_config


def make_config(**overrides: Any) -> RunConfig:
    """Default config with kebab-case overrides given as snake_case keywords."""
    raw = default_run_config()
    raw.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return parse_run_config(raw)


def deliver_wire(context: Context, message_type: str, content: RecordDict) -> Message:
    """Run the ClientApp on one message from the server (node 7), in-process; its reply as sent on
    the wire (content packed as the ServerApp's `PollingGrid` packs it)."""
    metadata = Metadata(run_id=1, message_id=f"m-{time.monotonic_ns()}", src_node_id=0, dst_node_id=7,
                        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=3600.0,
                        message_type=message_type)
    return app(pack_message(Message(content=content, metadata=metadata)), context)


def deliver(context: Context, message_type: str, content: RecordDict) -> Message:
    """`deliver_wire`'s reply unpacked, as the ServerApp's `PollingGrid` reads it."""
    return unpack_message(deliver_wire(context, message_type, content))


class PushPullGrid(Grid):
    """A test Grid that only pushes, pulls and lists nodes; the rest of Grid's abstract API is unused."""

    def set_run(self, run) -> None:
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError
