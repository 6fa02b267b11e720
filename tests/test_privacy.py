"""Differential privacy: Flower's DP wrappers around the aggregation rule, the client mods, noisy histograms.

Every expected value is worked out here from the update vectors the test builds (norms, means,
Gaussian/Laplace standard deviations), not read back from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.client_privacy import client_clipping_mod, noisy_counts
from feddqc_flwr.app.config import ConfigError, parse_run_config
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from feddqc_flwr.app.strategies.privacy import privacy_report, with_privacy
from feddqc_flwr.selection.score_sketch import ScoreSketch, bin_index, criteria_record
from feddqc_flwr.selection.threshold import lambda_for_retention
from tests.helpers import default_run_config, make_config

KEYS = ("q.lora_A.weight", "q.lora_B.weight")


class OfflineGrid:
    """Just enough Grid for configure_train: node ids (nothing is sent)."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})


def _reply(node: int, arrays: dict[str, np.ndarray], examples: int = 1) -> Message:
    content = RecordDict({"arrays": _record(arrays),
                          "metrics": MetricRecord({"train-loss": 1.0, "num-examples": examples})})
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                        group_id="1", created_at=0.0, ttl=100.0, message_type="train")
    return Message(content=content, metadata=metadata)


def _norm(update: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in update.values()))


def _strategy(**overrides) -> FedDQCStrategy:
    cfg = make_config(method="fedavg", min_train_nodes=2, aggregation_weight="uniform", **overrides)
    return FedDQCStrategy(with_privacy(build_base_strategy(cfg), cfg), cfg)


def _round(strategy: FedDQCStrategy, current: dict[str, np.ndarray], clients: list[dict[str, np.ndarray]]):
    """Configure one round, answer with `current + update` per client; (aggregate or None, replies, sent)."""
    sent = list(strategy.configure_train(1, _record(current), ConfigRecord(), OfflineGrid([11, 12][:len(clients)])))
    replies = [_reply(11 + i, {k: current[k] + u[k] for k in KEYS}) for i, u in enumerate(clients)]
    arrays, _ = strategy.aggregate_train(1, replies)
    return None if arrays is None else {k: arrays[k].numpy().astype(np.float64) for k in KEYS}, replies, sent



@pytest.mark.usefixtures("server_task_identity")
def test_server_side_fixed_clipping_bounds_each_update_norm() -> None:
    """Client 11's update has norm 13 (5-12-0 scaled), client 12's 0.5: with C = 1 the first is scaled
    to norm 1, the second passes unchanged, and with no noise the aggregate is their plain mean."""
    current = {KEYS[0]: np.full((2, 2), 0.25), KEYS[1]: np.zeros((2, 2))}
    big = {KEYS[0]: np.array([[5.0, 0.0], [0.0, 0.0]]), KEYS[1]: np.array([[0.0, 12.0], [0.0, 0.0]])}
    small = {KEYS[0]: np.array([[0.0, 0.3], [0.0, 0.0]]), KEYS[1]: np.array([[0.0, 0.0], [0.4, 0.0]])}
    assert _norm(big) == 13.0 and _norm(small) == pytest.approx(0.5)
    strategy = _strategy(dp_mode="server-fixed", dp_clipping_norm=1.0, dp_noise_multiplier=0.0)
    out, replies, _ = _round(strategy, current, [big, small])
    clipped = [{k: r.content["arrays"][k].numpy() - current[k] for k in KEYS} for r in replies]
    assert _norm(clipped[0]) == pytest.approx(1.0, rel=1e-6)
    assert _norm(clipped[1]) == pytest.approx(0.5, rel=1e-6)
    for k in KEYS:
        expected = current[k] + (big[k] / 13.0 + small[k]) / 2
        np.testing.assert_allclose(out[k], expected, rtol=0, atol=1e-7)
    assert _norm({k: out[k] - current[k] for k in KEYS}) <= 1.0  # the mean of vectors of norm <= C


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
@pytest.mark.usefixtures("server_task_identity")
def test_noise_on_the_aggregate_has_std_z_c_over_n(mode: str) -> None:
    """z = 0.8, C = 0.5, n = 2: Gaussian noise of std 0.8 * 0.5 / 2 = 0.2 on every aggregated weight.

    Over N = 200,000 weights the sample std has a relative standard error of 1/sqrt(2N) = 0.16 %;
    1 % is 6 standard errors. The updates (norm 0.1 < C) are not clipped, so the noise is
    aggregate - (current + mean update).
    """
    rng = np.random.default_rng(1)
    current = {KEYS[0]: rng.normal(0, 0.02, (100, 1000)), KEYS[1]: np.zeros((1000, 100))}
    updates = []
    for _ in range(2):
        raw = {k: rng.normal(0, 1, v.shape) for k, v in current.items()}
        updates.append({k: v * 0.1 / _norm(raw) for k, v in raw.items()})
    strategy = _strategy(dp_mode=mode, dp_clipping_norm=0.5, dp_noise_multiplier=0.8, dp_num_sampled_clients=2)
    out, _, sent = _round(strategy, current, updates)
    if mode == "client-fixed":  # the wrapper tells the clients' mod the norm to clip to
        assert [m.content["config"]["clipping_norm"] for m in sent] == [0.5, 0.5]
    noise = np.concatenate([(out[k] - (current[k] + (updates[0][k] + updates[1][k]) / 2)).ravel() for k in KEYS])
    assert noise.size == 200_000
    assert noise.std() == pytest.approx(0.2, rel=0.01)
    assert abs(noise.mean()) < 5 * 0.2 / math.sqrt(noise.size)


@pytest.mark.usefixtures("server_task_identity")
def test_a_round_with_fewer_replies_than_the_noise_assumes_is_not_aggregated() -> None:
    """n = 3 calibrates the noise for a mean of 3 updates; 2 replies would each move it by C/2."""
    strategy = _strategy(dp_mode="server-fixed", dp_num_sampled_clients=3, min_train_replies=1)
    current = {KEYS[0]: np.ones((2, 2)), KEYS[1]: np.zeros((2, 2))}
    update = {KEYS[0]: np.full((2, 2), 0.1), KEYS[1]: np.full((2, 2), 0.1)}
    arrays, replies, sent = _round(strategy, current, [update, update])
    assert len(sent) == 2 and arrays is None  # the run goes on; the global adapter stays as it was
    assert strategy.rounds[1].aggregated is False and len(strategy.rounds[1].clients) == 2


@pytest.mark.usefixtures("server_task_identity")
def test_adaptive_clipping_norm_and_fedopt_moments_survive_a_checkpoint() -> None:
    """Under a DP wrapper the FedOpt moments are still the rule's; the adaptive C is saved beside them."""
    strategy = _strategy(dp_mode="server-adaptive", strategy="fedadam", dp_noise_multiplier=0.0,
                         dp_clipping_norm=0.1, dp_clip_norm_lr=0.2, dp_target_clipped_quantile=0.5)
    current = {KEYS[0]: np.ones((2, 2)), KEYS[1]: np.zeros((2, 2))}
    big = {KEYS[0]: np.full((2, 2), 1.0), KEYS[1]: np.zeros((2, 2))}
    _round(strategy, current, [big, big])
    # Both updates (norm 2) are clipped: fraction 1, C <- 0.1 * exp(-0.2 * (1 - 0.5)) (no count noise at z = 0)
    state = strategy.optimizer_state()
    assert float(state["dp-clipping-norm"]) == pytest.approx(0.1 * math.exp(-0.1))
    assert {k.split("/")[0] for k in state} == {"m_t", "v_t", "dp-clipping-norm"}
    fresh = _strategy(dp_mode="server-adaptive", strategy="fedadam", dp_noise_multiplier=0.0, dp_clipping_norm=0.1)
    fresh.load_optimizer_state(state)
    assert fresh.base.clipping_norm == pytest.approx(0.1 * math.exp(-0.1))
    np.testing.assert_array_equal(fresh.base.strategy.m_t[KEYS[0]], state[f"m_t/{KEYS[0]}"])


@pytest.mark.usefixtures("server_task_identity")
def test_adaptive_effective_noise_multiplier_and_summary_report() -> None:
    """Andrew et al.: z_eff = (z^-2 - (2 sigma_b)^-2)^-1/2; z = 0.1, sigma_b = n/20 = 0.1 -> 75^-1/2."""
    strategy = _strategy(dp_mode="client-adaptive", dp_noise_multiplier=0.1, dp_clipping_norm=0.2)
    report = privacy_report(strategy.cfg, strategy.base)
    assert report["effective_noise_multiplier"] == pytest.approx(75 ** -0.5)
    assert report["clipped_count_stddev"] == pytest.approx(0.1)
    assert report["final_noise_stddev"] == pytest.approx(75 ** -0.5 * 0.2 / 2)
    assert report["caveats"] == []  # fedavg with uniform weights
    weighted = make_config(dp_mode="server-fixed", strategy="fedadam")
    caveats = privacy_report(weighted, with_privacy(build_base_strategy(weighted), weighted))["caveats"]
    assert len(caveats) == 2 and "strategy = 'fedadam'" in caveats[0] and "'dataset'" in caveats[1]
    plain = privacy_report(make_config(), build_base_strategy(make_config()))
    assert plain["dp_mode"] == "none" and plain["not_protected"][0] == "adapter updates"


def _train_message(arrays: ArrayRecord, config: dict) -> Message:
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                        group_id="1", created_at=0.0, ttl=100.0, message_type="train")
    return Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), metadata=metadata)


def _context(mode: str) -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={"dp-mode": mode})


@pytest.mark.parametrize("mode", ["client-fixed", "client-adaptive"])
@pytest.mark.usefixtures("client_task_identity")
def test_client_mod_clips_the_train_reply(mode: str) -> None:
    """The update (3, 4) has norm 5; C = 0.5 scales it to (0.3, 0.4). The adaptive mod adds the norm bit."""
    sent = _record({KEYS[0]: np.array([1.0, 1.0])})
    msg = _train_message(sent, {"clipping_norm": 0.5})

    def train(message: Message, context: Context) -> Message:
        arrays = _record({KEYS[0]: np.array([4.0, 5.0])})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 3})}),
                       reply_to=message)

    reply = client_clipping_mod(msg, _context(mode), train)
    np.testing.assert_allclose(reply.content["arrays"][KEYS[0]].numpy(), [1.3, 1.4], rtol=1e-6)
    assert ("norm_bit" in reply.content["metrics"]) == (mode == "client-adaptive")
    unchanged = client_clipping_mod(msg, _context(mode), lambda m, c: Message(
        RecordDict({"arrays": m.content["arrays"], "metrics": MetricRecord({"num-examples": 2})}), reply_to=m))
    assert not unchanged.has_error()  # nothing trained: Flower's clip would divide by a zero norm
    np.testing.assert_array_equal(unchanged.content["arrays"][KEYS[0]].numpy(), [1.0, 1.0])
    assert unchanged.content["metrics"]["num-examples"] == 0  # no clipping bit: kept out of the aggregate
    passthrough = client_clipping_mod(msg, _context("server-fixed"), train)
    np.testing.assert_array_equal(passthrough.content["arrays"][KEYS[0]].numpy(), [4.0, 5.0])


@pytest.mark.usefixtures("client_task_identity")
def test_real_client_app_clips_train_and_leaves_queries_alone(tiny_model_dir: Path) -> None:
    """Through the ClientApp: the mod sits on `train` only, so a score query (arrays + config, no
    clipping_norm) is answered, a train message without clipping_norm is refused, and with C = 1e-4
    the trained adapter comes back exactly C away from the one sent."""
    from feddqc_flwr.app.model_spec import spec_from_config
    from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle
    from tests.helpers import deliver

    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 1, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "hierarchies": 1, "num-server-rounds": 1, "dp-mode": "client-fixed", "dtype": "float32",
                "dp-histogram-epsilon": 1.0})
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=raw)
    arrays = adapter_arrays(load_model_bundle(spec_from_config(parse_run_config(raw))).model)
    scored = deliver(context, "query.score", RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": 1, "hierarchy": 1})}))
    assert not scored.has_error() and "count" not in scored.content["metrics"]  # the exact count is not sent
    config = {"server-round": 1, "hierarchy": 1, "rescore": True, "lr": 0.05, "lambda": [-math.inf, -math.inf]}
    refused = deliver(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(config)}))
    assert refused.has_error() and refused.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    reply = deliver(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(
        {**config, "clipping_norm": 1e-4})}))
    assert not reply.has_error(), reply.error
    update = {k: reply.content["arrays"][k].numpy() - arrays[k].numpy() for k in arrays}
    assert _norm(update) == pytest.approx(1e-4, rel=1e-3)  # lr 0.05 moves it far more than 1e-4: clipped
    metrics = reply.content["metrics"]
    assert metrics["pool"] > 0 and all(math.isnan(metrics[f"score-q{q}"]) for q in (10, 50, 90))  # noised away


def test_histogram_noise_is_laplace_of_scale_one_over_epsilon() -> None:
    """epsilon = 0.5: Laplace scale b = 2, variance 2 b^2 = 8, plus rounding to integers (variance ~1/12).

    The sample std's relative standard error over 100,000 bins is about sqrt((kurtosis - 1) / 4N) =
    sqrt(5 / 4e5) = 0.35 %, so 2 % is over 5 of them. Signed: empty bins go negative as often as positive.
    """
    counts = np.full(100_000, 1000)
    noisy = noisy_counts(counts, 0.5, np.random.default_rng(3))
    assert noisy.dtype == np.int64
    assert (noisy - counts).std() == pytest.approx(math.sqrt(8 + 1 / 12), rel=0.02)
    assert abs((noisy - counts).mean()) < 5 * math.sqrt(8) / math.sqrt(counts.size)
    empty = noisy_counts(np.zeros(100_000, dtype=np.int64), 0.5, np.random.default_rng(4))
    assert (empty < 0).mean() == pytest.approx((empty > 0).mean(), abs=0.01)


def test_lambda_from_noisy_sketches_over_thousands_of_empty_bins() -> None:
    """Two clients, 500 rows each in [-3, -2] plus one row at -5 and one at +5: the noised range spans
    ~4,400 bins (200 bins), almost all empty. Retention 0.5 puts the exact lambda in [-3, -2].
    Flooring each client's noisy bins at 0 would add ~0.4 rows per empty bin at epsilon = 1 (~1,750 per
    client, spread over the whole range) and drag lambda out of the band; summed signed noise has mean
    0 (std of the count from the top ≈ sqrt(2 · 4,400 · 2.08) ≈ 135 rows, under the 502 target)."""
    rng = np.random.default_rng(5)
    clients = [np.concatenate([rng.uniform(-3.0, -2.0, 500), [-5.0, 5.0]]) for _ in range(2)]
    sketches = [ScoreSketch.of(scores, np.zeros(scores.size, dtype=bool), 200) for scores in clients]
    assert max(sketches[0].counts) - min(sketches[0].counts) > 4000
    merged = ScoreSketch(200, {}, {})
    for sketch in sketches:
        merged = merged.merge(sketch.noisy(lambda counts: noisy_counts(counts, 1.0, rng)))
    edges, counts, _ = merged.histogram()
    assert abs(int(counts.sum()) - 1004) < 4 * 135
    assert -3.0 <= lambda_for_retention(counts, edges, 0.5) <= -2.0


def test_neighbouring_datasets_give_noisy_replies_of_the_same_shape_within_one_range() -> None:
    """The stated guarantee: given the bin range, adding one row changes no key and no length of the
    reply (every bin of the range is sent, noised); a row outside the range extends it, visibly."""
    base = np.array([-3.0, -2.5, -2.0, 1.0, 2.0])
    records = []
    for scores in (base, np.append(base, -2.2), np.append(base, 40.0)):  # original, neighbour inside, outlier
        sketch = ScoreSketch.of(scores, np.zeros(scores.size, dtype=bool), 200)
        noisy = sketch.noisy(lambda counts: noisy_counts(counts, 1.0, np.random.default_rng(0)))
        records.append(criteria_record({"ira-sum": noisy, "loss": noisy}))
    original, inside, outlier = records
    assert original.keys() == inside.keys() == outlier.keys()
    assert all(len(original[k]) == len(inside[k]) for k in original)
    assert original["loss/bins"] == inside["loss/bins"]
    # -3.0 .. 2.0 at 200 bins: from bin_index(-3) to bin_index(2), every one sent
    first, last = (int(bin_index(np.array([v]), 200)[0]) for v in (-3.0, 2.0))
    assert original["ira-sum/bins"] == list(range(first, last + 1))
    assert len(outlier["ira-sum/bins"]) > len(original["ira-sum/bins"])  # the documented limitation


@pytest.mark.parametrize(("overrides", "message"), [
    ({"dp-mode": "local"}, "'dp-mode' = 'local': allowed values are none, server-fixed, server-adaptive"),
    ({"dp-clipping-norm": 0.0}, "'dp-clipping-norm' = 0.0: must be > 0"),
    ({"dp-noise-multiplier": -1.0}, "'dp-noise-multiplier' = -1.0: must be >= 0"),
    ({"dp-num-sampled-clients": 0}, "'dp-num-sampled-clients' = 0: must be >= 1"),
    ({"dp-target-clipped-quantile": 1.5}, "'dp-target-clipped-quantile' = 1.5: must be in [0.0, 1.0]"),
    ({"dp-histogram-epsilon": -0.1}, "'dp-histogram-epsilon' = -0.1: must be >= 0"),
    ({"dp-mode": "server-adaptive", "dp-noise-multiplier": 0.2},
     "'dp-noise-multiplier' = 0.2: with dp-mode = 'server-adaptive' it must be below 2 x 'dp-clipped-count-stddev'"),
    ({"dp-mode": "client-fixed", "transport-dtype": "float16"}, "use transport-dtype = 'float32'"),
])
def test_bad_privacy_values_name_the_key(overrides: dict, message: str) -> None:
    raw = default_run_config()
    raw.update(overrides)
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    assert message in str(err.value)


def test_adaptive_noise_is_allowed_with_a_larger_count_stddev() -> None:
    cfg = make_config(dp_mode="server-adaptive", dp_noise_multiplier=1.0, dp_clipped_count_stddev=1.0)
    assert cfg.dp_noise_multiplier == 1.0
