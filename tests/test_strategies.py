"""One aggregation round changes the adapter exactly as each strategy's formula says."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy, cosine_lr
from tests.helpers import make_config

GLOBAL = {"layer.lora_A.weight": np.array([[1.0, -2.0], [0.5, 0.0]]), "layer.lora_B.weight": np.zeros((2, 2))}


pytestmark = pytest.mark.usefixtures("server_task_identity")


class OfflineGrid:
    """Just enough Grid for configure_train: node ids (nothing is sent)."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _reply(node: int, arrays: dict[str, np.ndarray], examples: int, loss: float = 1.0) -> Message:
    content = RecordDict({
        "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        "metrics": MetricRecord({"train-loss": loss, "num-examples": examples, "kept": 3.0}),
    })
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                        group_id="1", created_at=0.0, ttl=100.0, message_type="train")
    return Message(content=content, metadata=metadata)


def _client(delta: float) -> dict[str, np.ndarray]:
    return {k: v + delta * (i + 1) for i, (k, v) in enumerate(GLOBAL.items())}


def _one_round(strategy_name: str, replies: list[Message]) -> dict[str, np.ndarray]:
    cfg = make_config(strategy=strategy_name, method="fedavg", min_train_nodes=2)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    initial = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    messages = list(strategy.configure_train(1, initial, ConfigRecord(), OfflineGrid([11, 12])))
    assert len(messages) == 2
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None and metrics["kept"] == 6.0  # counts add up across clients
    return {k: a.numpy() for k, a in arrays.items()}


def test_fedavg_is_the_example_weighted_mean() -> None:
    a, b = _client(1.0), _client(-0.5)
    out = _one_round("fedavg", [_reply(11, a, 30), _reply(12, b, 10)])
    for k in GLOBAL:
        np.testing.assert_allclose(out[k], (30 * a[k] + 10 * b[k]) / 40, rtol=1e-6)


def test_fedadam_follows_its_update_rule() -> None:
    cfg = make_config()
    eta, b1, b2, tau = cfg.fedopt_eta, cfg.fedopt_beta1, cfg.fedopt_beta2, cfg.fedopt_tau
    a, b = _client(0.2), _client(0.6)
    out = _one_round("fedadam", [_reply(11, a, 1), _reply(12, b, 3)])
    for k, x in GLOBAL.items():
        delta = (a[k] + 3 * b[k]) / 4 - x
        m, v = (1 - b1) * delta, (1 - b2) * delta**2
        eta_norm = eta * math.sqrt(1 - b2**2) / (1 - b1**2)  # Flower's bias correction at round 1
        np.testing.assert_allclose(out[k], x + eta_norm * m / (np.sqrt(v) + tau), rtol=1e-5, atol=1e-7)


def test_non_finite_and_empty_replies_are_left_out() -> None:
    good, bad = _client(1.0), _client(1.0)
    bad["layer.lora_A.weight"][0, 0] = np.nan
    cfg = make_config(strategy="fedavg", method="fedavg")
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    initial = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    list(strategy.configure_train(1, initial, ConfigRecord(), OfflineGrid([11, 12, 13])))
    arrays, _ = strategy.aggregate_train(1, [_reply(11, good, 5), _reply(12, bad, 5), _reply(13, good, 0)])
    for k in GLOBAL:
        np.testing.assert_allclose(arrays[k].numpy(), good[k])
    assert strategy.rounds[1].excluded == 2


def test_round_config_carries_lr_hierarchy_and_rescore_flag() -> None:
    cfg = make_config(method="fedavg", num_server_rounds=6, hierarchies=3, lr_max=1e-4, lr_min=1e-6)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    initial = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    msg = list(strategy.configure_train(3, initial, ConfigRecord(), OfflineGrid([1, 2])))[0]
    config = msg.content["config"]
    assert config["hierarchy"] == 2 and config["server-round"] == 3 and config["rescore"] is False
    assert config["lr"] == pytest.approx(1e-6 + 0.5 * (1e-4 - 1e-6) * (1 + math.cos(math.pi * 2 / 6)))
    assert cosine_lr(1, 6, 1e-4, 1e-6) == pytest.approx(1e-4)


def _fp16_round_trip(strategy_name: str, transport: str) -> tuple[FedDQCStrategy, list[Message], ArrayRecord,
                                                                   list[dict[str, np.ndarray]]]:
    """One round with realistic-size arrays: the messages sent, the aggregate and the two replies."""
    rng = np.random.default_rng(0)
    initial = {"q.lora_A.weight": rng.normal(0, 0.02, (8, 576)).astype(np.float32),
               "q.lora_B.weight": rng.normal(0, 0.02, (576, 8)).astype(np.float32)}
    clients = [{k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in initial.items()} for _ in range(2)]
    cfg = make_config(strategy=strategy_name, method="fedavg", min_train_nodes=2, transport_dtype=transport)
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    record = ArrayRecord({k: Array(v) for k, v in initial.items()})
    messages = list(strategy.configure_train(1, record, ConfigRecord(), OfflineGrid([11, 12])))
    wire = [{k: v.astype(transport) for k, v in c.items()} for c in clients]  # what each client sends back
    arrays, _ = strategy.aggregate_train(1, [_reply(11, wire[0], 30), _reply(12, wire[1], 10)])
    return strategy, messages, arrays, wire


def test_fp16_transport_halves_the_adapter_bytes_both_ways() -> None:
    _, fp32_messages, _, _ = _fp16_round_trip("fedavg", "float32")
    _, fp16_messages, _, _ = _fp16_round_trip("fedavg", "float16")
    fp32_record, fp16_record = fp32_messages[0].content["arrays"], fp16_messages[0].content["arrays"]
    assert all(a.dtype == "float16" for m in fp16_messages for a in m.content["arrays"].values())
    raw = sum(a.numpy().nbytes for a in fp32_record.values())
    # Serialized size as `feddqc bench comm` measures it: exactly half the tensor bytes saved.
    assert fp32_record.count_bytes() - fp16_record.count_bytes() == raw // 2
    assert fp16_record.count_bytes() / fp32_record.count_bytes() < 0.51


@pytest.mark.parametrize("strategy_name", ["fedavg", "fedadam"])
def test_fp16_aggregate_is_fp32_math_on_the_rounded_replies(strategy_name: str) -> None:
    strategy, _, fp16_out, wire = _fp16_round_trip(strategy_name, "float16")
    _, _, fp32_out, _ = _fp16_round_trip(strategy_name, "float32")
    for k in fp32_out:
        assert fp16_out[k].dtype == fp32_out[k].dtype != "float16"  # FedAvg gives float32, FedAdam float64
        # fp16 keeps ~11 significant bits: the aggregates agree to fp16 resolution of the weights.
        np.testing.assert_allclose(fp16_out[k].numpy(), fp32_out[k].numpy(), rtol=0, atol=2 ** -11 * 0.1)
    if strategy_name == "fedavg":  # the mean is taken in fp32, not in the replies' fp16
        for k in fp32_out:
            expected = (30 * wire[0][k].astype(np.float32) + 10 * wire[1][k].astype(np.float32)) / 40
            np.testing.assert_allclose(fp16_out[k].numpy(), expected, rtol=1e-6, atol=0)
    if strategy_name == "fedadam":  # FedOpt's reference point and moments stay fp32
        assert all(v.dtype == np.float32 for v in strategy.base.current_arrays.values())
        assert all(v.dtype == np.float32 for v in strategy.base.m_t.values())


# --- every strategy the `strategy` key offers, built by the factory from a parsed run config ---

# Client offsets from the round's global adapter, per round: (offset per key, num-examples). All values
# are exact in float32, so what the clients send is exactly global + offset.
ROUND_1 = [({"layer.lora_A.weight": np.array([[1.0, -0.5], [0.25, 2.0]]),
             "layer.lora_B.weight": np.array([[0.5, 0.5], [-1.0, 0.125]])}, 3),
           ({"layer.lora_A.weight": np.array([[-1.0, 0.5], [0.75, -2.0]]),
             "layer.lora_B.weight": np.array([[1.5, -0.5], [1.0, 0.375]])}, 1)]
ROUND_2 = [({"layer.lora_A.weight": np.array([[0.5, 0.0625], [-0.25, 1.0]]),
             "layer.lora_B.weight": np.array([[-0.5, 0.0], [0.03125, 1.5]])}, 1),
           ({"layer.lora_A.weight": np.array([[0.5, 0.0], [-0.25, 3.0]]),
             "layer.lora_B.weight": np.array([[-0.5, 0.25], [0.03125, -0.5]])}, 1)]


def _mean_offset(clients: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Delta of the example-weighted mean from the global adapter, by hand."""
    total = sum(n for _, n in clients)
    return {k: sum(n * d[k] for d, n in clients) / total for k in GLOBAL}


def _run_rounds(cfg, rounds) -> tuple[list[dict[str, np.ndarray]], list[Message]]:
    """Configure and aggregate each round as the ServerApp does: round t+1 starts from round t's result."""
    strategy = FedDQCStrategy(build_base_strategy(cfg), cfg)
    history = [{k: v.copy() for k, v in GLOBAL.items()}]
    sent: list[Message] = []
    for server_round, clients in enumerate(rounds, start=1):
        current = history[-1]
        record = ArrayRecord({k: Array(v) for k, v in current.items()})
        sent = list(strategy.configure_train(server_round, record, ConfigRecord(), OfflineGrid([11, 12])))
        replies = [_reply(11 + i, {k: (current[k] + d[k]).astype(np.float32) for k in GLOBAL}, n)
                   for i, (d, n) in enumerate(clients)]
        arrays, _ = strategy.aggregate_train(server_round, replies)
        history.append({k: a.numpy().astype(np.float64) for k, a in arrays.items()})
    return history, sent


def _assert_step(history: list[dict[str, np.ndarray]], t: int, expected: dict[str, np.ndarray]) -> None:
    """The change of the global adapter in round t is `expected` (compared as the update, not the weights)."""
    for k in GLOBAL:
        np.testing.assert_allclose(history[t][k] - history[t - 1][k], expected[k], rtol=2e-5, atol=1e-7)


def test_fedavgm_second_round_adds_momentum_times_the_first_update() -> None:
    cfg = make_config(strategy="fedavgm", method="fedavg", min_train_nodes=2, server_learning_rate=0.5,
                      server_momentum=0.9)
    history, _ = _run_rounds(cfg, [ROUND_1, ROUND_2])
    d1, d2 = _mean_offset(ROUND_1), _mean_offset(ROUND_2)
    # Flower's FedAvgM (SGD with momentum on the pseudo-gradient x - mean): v1 = -d1, v2 = 0.9·v1 - d2,
    # x_t = x_{t-1} - lr·v_t.
    _assert_step(history, 1, {k: 0.5 * d1[k] for k in GLOBAL})
    _assert_step(history, 2, {k: 0.5 * (0.9 * d1[k] + d2[k]) for k in GLOBAL})


def test_fedprox_sends_mu_and_averages_like_fedavg() -> None:
    cfg = make_config(strategy="fedprox", method="fedavg", min_train_nodes=2, proximal_mu=0.05)
    history, sent = _run_rounds(cfg, [ROUND_1])
    assert [m.content["config"]["proximal-mu"] for m in sent] == [0.05, 0.05]
    _assert_step(history, 1, _mean_offset(ROUND_1))


def test_fedadagrad_accumulates_squared_updates() -> None:
    eta, tau = 0.3, 0.01
    cfg = make_config(strategy="fedadagrad", method="fedavg", min_train_nodes=2, fedopt_eta=eta, fedopt_tau=tau)
    history, _ = _run_rounds(cfg, [ROUND_1, ROUND_2])
    d1, d2 = _mean_offset(ROUND_1), _mean_offset(ROUND_2)
    # Reddi et al. 2021 with beta1 = 0 (Flower's FedAdagrad, as OpenFedLLM's): v_t = v_{t-1} + d_t², v_0 = 0.
    _assert_step(history, 1, {k: eta * d1[k] / (np.abs(d1[k]) + tau) for k in GLOBAL})
    _assert_step(history, 2, {k: eta * d2[k] / (np.sqrt(d1[k] ** 2 + d2[k] ** 2) + tau) for k in GLOBAL})


def test_fedyogi_moves_v_by_the_sign_of_v_minus_the_squared_update() -> None:
    eta, tau, b1, b2 = 0.3, 0.01, 0.9, 0.5
    cfg = make_config(strategy="fedyogi", method="fedavg", min_train_nodes=2, fedopt_eta=eta, fedopt_tau=tau,
                      fedopt_beta1=b1, fedopt_beta2=b2)
    history, _ = _run_rounds(cfg, [ROUND_1, ROUND_2])
    d1, d2 = _mean_offset(ROUND_1), _mean_offset(ROUND_2)
    m1 = {k: (1 - b1) * d1[k] for k in GLOBAL}
    v1 = {k: (1 - b2) * d1[k] ** 2 for k in GLOBAL}  # v_0 = 0: v_1 = 0 - (1-b2)·d1²·sign(0 - d1²)
    m2 = {k: b1 * m1[k] + (1 - b1) * d2[k] for k in GLOBAL}
    v2 = {k: v1[k] - (1 - b2) * d2[k] ** 2 * np.sign(v1[k] - d2[k] ** 2) for k in GLOBAL}
    signs = np.concatenate([np.sign(v1[k] - d2[k] ** 2).ravel() for k in GLOBAL])
    assert (signs > 0).any() and (signs < 0).any()  # the offsets exercise both branches of Yogi's v
    _assert_step(history, 1, {k: eta * m1[k] / (np.sqrt(v1[k]) + tau) for k in GLOBAL})
    _assert_step(history, 2, {k: eta * m2[k] / (np.sqrt(v2[k]) + tau) for k in GLOBAL})


@pytest.mark.parametrize(("weight", "expected"), [("dataset", (30, 10)), ("stage", (5, 15))])
def test_aggregation_weight_key_picks_dataset_or_stage_rows(weight: str, expected: tuple[int, int]) -> None:
    """Client A has 30 training rows and trains 5 this stage; client B has 10 and trains 15."""
    from feddqc_flwr.app.client_app import aggregation_weight

    cfg = make_config(aggregation_weight=weight)
    a, b = _client(1.0), _client(-0.5)
    weights = [aggregation_weight(cfg.aggregation_weight, rows, stage) for rows, stage in ((30, 5), (10, 15))]
    assert weights == list(expected)
    assert aggregation_weight(cfg.aggregation_weight, 30, 0) == 0  # nothing trained: left out
    out = _one_round("fedavg", [_reply(11, a, weights[0]), _reply(12, b, weights[1])])
    wa, wb = expected
    for k in GLOBAL:
        np.testing.assert_allclose(out[k], (wa * a[k] + wb * b[k]) / (wa + wb), rtol=1e-6)
