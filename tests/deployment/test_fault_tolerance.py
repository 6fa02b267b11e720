"""Server-side fault handling without processes: minimum replies, checkpoints, resume checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.results import RunRecorder, checkpoint_state, load_checkpoint
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle
from tests.helpers import make_config
from tests.test_strategies import GLOBAL, OfflineGrid, _client, _reply

pytestmark = pytest.mark.usefixtures("server_task_identity")


def _failed(node: int) -> Message:
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                        group_id="1", created_at=0.0, ttl=100.0, message_type="train")
    return Message(metadata=metadata, error=Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node gone"))


def _strategy(**overrides: object) -> FedDQCStrategy:
    cfg = make_config(method="fedavg", **overrides)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    initial = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    list(strategy.configure_train(1, initial, ConfigRecord(), OfflineGrid([11, 12, 13])))
    return strategy


def test_too_few_usable_replies_keep_the_global_adapter(caplog: pytest.LogCaptureFixture) -> None:
    strategy = _strategy(min_train_replies=2)
    with caplog.at_level("WARNING", logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, [_reply(11, _client(1.0), 5), _failed(12)])
    assert arrays is None and metrics is None  # Flower then keeps the previous arrays
    entry = strategy.rounds[1]
    assert not entry.aggregated and entry.failures == 1 and entry.missing == 1 and entry.sent == 3
    assert "fewer than min-train-replies = 2" in caplog.text and "node gone" in caplog.text


def test_round_proceeds_with_the_replies_that_came() -> None:
    strategy = _strategy(min_train_replies=1)
    good = _client(1.0)
    arrays, _ = strategy.aggregate_train(1, [_reply(11, good, 5), _failed(12)])
    assert strategy.rounds[1].aggregated and strategy.rounds[1].missing == 1
    for k in GLOBAL:
        np.testing.assert_allclose(arrays[k].numpy(), good[k])


def test_min_train_replies_is_validated() -> None:
    with pytest.raises(ConfigError, match="'min-train-replies'"):
        make_config(min_train_replies=0)
    with pytest.raises(ConfigError, match="'resume-from'"):
        make_config(resume_from=" runs/x")


def test_checkpoint_round_trip_restores_adapter_lambda_and_fedopt_moments(tmp_path: Path,
                                                                           tiny_model_dir: Path) -> None:
    cfg = make_config(model=str(tiny_model_dir), method="fedavg", strategy="fedadam", num_server_rounds=4,
                      hierarchies=2, lora_r=4, lora_alpha=8, output_dir=str(tmp_path))
    bundle = load_model_bundle(spec_from_config(cfg))
    arrays = adapter_arrays(bundle.model)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    strategy.base.m_t = {k: np.full_like(a.numpy(), 0.5) for k, a in arrays.items()}
    strategy.base.v_t = {k: np.full_like(a.numpy(), 0.25) for k, a in arrays.items()}
    recorder = RunRecorder(cfg, tmp_path)
    for done in (1, 2):  # the second save replaces the first
        state = checkpoint_state(cfg, done, {"ira-sum": 0.125, "loss": -2.5})
        recorder.save_checkpoint(bundle.model, state, strategy.optimizer_state())
    assert not any(p.name.startswith("last.") for p in (recorder.run_dir / "adapters").iterdir())

    resumed_cfg = make_config(**{**{k.replace("-", "_"): v for k, v in cfg.as_dict().items()},
                                 "resume_from": str(recorder.run_dir)})
    checkpoint = load_checkpoint(resumed_cfg, list(arrays))
    assert checkpoint.completed_round == 2 and checkpoint.thresholds == {"ira-sum": 0.125, "loss": -2.5}
    for key, value in arrays.items():
        np.testing.assert_array_equal(checkpoint.arrays[key].numpy(), value.numpy())
    fresh = FedDQCStrategy(build_base_strategy(resumed_cfg), resumed_cfg)
    fresh.load_optimizer_state(checkpoint.optimizer)
    fresh.resume(checkpoint.completed_round, checkpoint.thresholds)
    assert set(fresh.base.m_t) == set(arrays) and all(np.all(v == 0.25) for v in fresh.base.v_t.values())
    message = list(fresh.configure_train(1, arrays, ConfigRecord(), OfflineGrid([1, 2])))[0]
    assert message.content["config"]["server-round"] == 3 and list(message.content["config"]["lambda"]) == [0.125, -2.5]

    with pytest.raises(ConfigError, match="'resume-from'.*other data, selection or training settings.*"
                                          "'num-server-rounds' = 6 \\(checkpoint: 4\\)"):
        load_checkpoint(make_config(**{**{k.replace("-", "_"): v for k, v in resumed_cfg.as_dict().items()},
                                       "num_server_rounds": 6}), list(arrays))
    with pytest.raises(ConfigError, match="'resume-from'.*no .*state.json"):
        load_checkpoint(make_config(resume_from=str(tmp_path / "nowhere")), list(arrays))
