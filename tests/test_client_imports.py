"""A deployment ClientApp process handles one message and exits, so the app module must stay
cheap to import: a model-free message (`query.identity`) must not load torch, transformers, peft
or datasets. Checked in a fresh interpreter, as `flwr-clientapp` starts one."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "datasets", "flwr_datasets", "pandas", "pyarrow")

_CHILD = f"""
import json, sys, time
from flwr.app import Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.supercore.task_identity import TaskIdentity
from feddqc_flwr.app.client_app import app
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1
context = Context(run_id=1, node_id=7, node_config={{"partition-id": 3, "num-partitions": 4}}, state=RecordDict(),
                  run_config={{}})
metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7, reply_to_message_id="", group_id="1",
                    created_at=time.time(), ttl=3600.0, message_type="query.identity")
reply = app(Message(content=RecordDict(), metadata=metadata), context)
print(json.dumps({{"partition": int(reply.content["metrics"]["partition-id"]),
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_identity_message_imports_no_model_library() -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"partition": 3, "heavy": []}
