"""The FedDQC strategy: round config and global thresholds around any FedAvg-family rule.

It wraps one of Flower's strategies (which does the LoRA aggregation) and adds, per round, the
learning rate (cosine by round), the hierarchy index, the re-score flag and lambda. Before the
first lambda exists (threshold-mode = retention) the first round of a hierarchy starts with one
query: every connected client re-scores its pool with the current global adapter and replies
its counts on fixed bins (selection.score_sketch), which the server turns into lambda: one
histogram and one lambda per criterion of the scorer (`ira-sum+loss` has two; a row is kept only
when it passes both). With lambdas (given, or calibrated at an earlier hierarchy) there is no
query: each client re-scores
inside its first train message of the hierarchy and sends the counts with its reply, for the
global histogram in the metrics.
Replies that carry no examples or non-finite weights are left out of the aggregate and logged;
failed or missing replies (a node that died) are logged, and a round with fewer than
`min-train-replies` usable replies keeps the previous global adapter.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from feddqc_flwr.app.client_progress import RunLineage
from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.app.protocol import REFERENCE_KEY, SCORE_QUERY, SKETCH_KEY
from feddqc_flwr.app.strategies.node_order import SeededSampling
from feddqc_flwr.app.strategies.privacy import aggregation_rule, dp_replies_needed, load_privacy_state, privacy_state
from feddqc_flwr.app.strategies.update_similarity import cosine_matrix, flat_update
from feddqc_flwr.llm.model import arrays_are_finite, cast_arrays
from feddqc_flwr.selection.hierarchy import hierarchy_of_round, is_hierarchy_start
from feddqc_flwr.selection.histogram_metrics import histogram_summary
from feddqc_flwr.selection.score_sketch import ScoreSketch, criteria_from_record
from feddqc_flwr.selection.threshold import criterion_retention, lambda_for_retention, snap_to_bin_edge

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`

OPTIMIZER_STATE = ("m_t", "v_t")  # FedOpt moments (FedAdagrad/FedYogi/FedAdam): {array key: array}
MOMENTUM = "momentum_vector"  # FedAvgM's server momentum: a list in the adapter's array order


def cosine_lr(server_round: int, num_rounds: int, lr_max: float, lr_min: float) -> float:
    """Learning rate of a 1-indexed round: lr_max in round 1, towards lr_min (OpenFedLLM)."""
    progress = (server_round - 1) / num_rounds
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress))


@dataclass
class RoundLog:
    """What the strategy learned in one round, for the metrics file."""

    server_round: int
    hierarchy: int
    lr: float
    rescore: bool
    threshold: float | None = None  # the first criterion's lambda (the paper's)
    thresholds: dict[str, float] = field(default_factory=dict)  # every criterion's lambda
    scoring: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    clients: list[dict[str, float]] = field(default_factory=list)
    evaluate: dict[str, float] = field(default_factory=dict)
    histogram: dict[str, list[float]] = field(default_factory=dict)  # first criterion: global edges, counts, bad
    criteria: dict[str, dict] = field(default_factory=dict)  # per criterion: {"histogram": ..., "summary": ...}
    update_similarity: list[list[float]] = field(default_factory=list)  # clients x clients cosine
    sent: int = 0
    failures: int = 0
    missing: int = 0
    excluded: int = 0
    aggregated: bool = False
    sent_at: float | None = None  # server clock: train messages handed to the Grid
    replies_at: float | None = None  # server clock: the round's replies reached aggregate_train


class FedDQCStrategy(Strategy):
    """Delegates aggregation to `base`; owns the schedule and the data-quality protocol."""

    def __init__(self, base: Strategy, cfg: RunConfig, reference_rows: list[dict] | None = None) -> None:
        self.base = base
        self.cfg = cfg
        self.reference_rows = reference_rows or []
        # Every lambda is a fixed bin's lower edge, so the server's counts and the clients' "score >= lambda" agree.
        self.thresholds: dict[str, float] | None = (
            {name: snap_to_bin_edge(value, cfg.histogram_bins) for name, value in cfg.named_lambdas.items()}
            if cfg.threshold_mode == "lambda" else None)
        self.rounds: dict[int, RoundLog] = {}
        self.round_offset = 0  # rounds already done by the run this one resumes
        self.lineage: RunLineage | None = None  # sent to clients, so they keep progress across resumes
        self._sent: ArrayRecord | None = None  # the global adapter of the current round
        self.sampling = SeededSampling(cfg.seed)

    @property
    def threshold(self) -> float | None:
        """The first criterion's lambda (the paper's), None before calibration."""
        return None if self.thresholds is None else self.thresholds[self.cfg.criteria[0]]

    def resume(self, completed_round: int, thresholds: dict[str, float] | None) -> None:
        """Continue a run after `completed_round`: Flower's round 1 becomes completed_round + 1."""
        self.round_offset = completed_round
        self.thresholds = thresholds

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The server optimizer's state for the per-round checkpoint: FedOpt moments as
        '<moment>/<array key>', FedAvgM's momentum as 'momentum_vector/<position>', an adaptive DP clipping norm."""
        rule = aggregation_rule(self.base)
        state = {f"{name}/{key}": value for name in OPTIMIZER_STATE
                 for key, value in (getattr(rule, name, None) or {}).items()}
        momentum = getattr(rule, MOMENTUM, None) or []
        state.update({f"{MOMENTUM}/{i}": np.asarray(value) for i, value in enumerate(momentum)})
        state.update(privacy_state(self.base))
        return state

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore `optimizer_state()`, so a resumed FedOpt/FedAvgM run does not restart at zero."""
        rule = aggregation_rule(self.base)
        for name in OPTIMIZER_STATE:
            moments = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}/")}
            if moments:
                setattr(rule, name, moments)
        momentum = {int(k.split("/", 1)[1]): v for k, v in state.items() if k.startswith(f"{MOMENTUM}/")}
        if momentum:
            setattr(rule, MOMENTUM, [momentum[i] for i in range(len(momentum))])
        load_privacy_state(self.base, state)

    def summary(self) -> None:
        log.info("FedDQC(method=%s, stages=%d, threshold-mode=%s) around:", self.cfg.method,
                 self.cfg.stages, self.cfg.threshold_mode)
        self.base.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        cfg = self.cfg
        server_round += self.round_offset
        stage = hierarchy_of_round(server_round, cfg.num_server_rounds, cfg.stages)
        rescore = cfg.method == "feddqc" and is_hierarchy_start(server_round, cfg.num_server_rounds,
                                                                  cfg.stages)
        entry = RoundLog(server_round, stage, cosine_lr(server_round, cfg.num_server_rounds,
                                                         cfg.lr_max, cfg.lr_min), rescore)
        self.rounds[server_round] = entry
        if rescore and self.thresholds is None:  # retention mode, no lambda yet: one query calibrates it
            entry.scoring = self._calibrate(server_round, stage, arrays, grid)
        entry.threshold, entry.thresholds = self.threshold, dict(self.thresholds or {})
        self._sent = cast_arrays(cast_arrays(arrays, cfg.transport_dtype), "float32")  # what clients start from
        round_config = ConfigRecord(dict(config))
        round_config.update({
            "server-round": server_round,
            "hierarchy": stage,
            "rescore": rescore,
            "lr": entry.lr,
            "lambda": [self.thresholds[c] if self.thresholds else -math.inf for c in cfg.criteria],
            **self._progress_config(),
        })
        # A client that scores inside train needs the anchors too, in any round: sampling may bring it
        # to this hierarchy for the first time later, and a SuperNode restarted mid-stage lost them.
        if self.reference_rows:
            round_config[REFERENCE_KEY] = json.dumps(self.reference_rows)
        nodes = self.sampling.nodes(grid, self._query_all, server_round, "train") if cfg.fraction_train < 1 else grid
        messages = self._to_transport(self.base.configure_train(server_round, arrays, round_config, nodes))
        entry.sent = len(messages)
        entry.sent_at = time.time()
        dp_needed = dp_replies_needed(self.base)
        if 0 < entry.sent < dp_needed:
            log.warning("round %d: %d client(s) sampled, fewer than dp-num-sampled-clients = %d that the noise "
                        "is calibrated for: this round will not be aggregated", server_round, entry.sent, dp_needed)
        return messages

    def _progress_config(self) -> dict[str, str]:
        return self.lineage.to_config() if self.lineage is not None else {}

    def _to_transport(self, messages: Iterable[Message]) -> list[Message]:
        """Cast the adapter in outgoing messages to `transport-dtype`, after the base strategy saw fp32.

        FedOpt keeps the arrays given to `configure_train` as its reference point, so the cast
        happens on the built messages, never on what the base strategy holds.
        """
        messages = list(messages)
        wire: dict[int, ArrayRecord] = {}  # the base strategy sends one record to every node: cast it once
        for message in messages:
            arrays = message.content["arrays"]
            if id(arrays) not in wire:
                wire[id(arrays)] = cast_arrays(arrays, self.cfg.transport_dtype)
            message.content["arrays"] = wire[id(arrays)]
        return messages

    def _query_all(self, grid: Grid, message_type: str, content: RecordDict,
                   node_ids: list[int] | None = None) -> list[Message]:
        """Send `content` to `node_ids` (default: every connected node); the replies without error."""
        node_ids = list(grid.get_node_ids()) if node_ids is None else node_ids
        messages = [Message(content=content, dst_node_id=nid, message_type=message_type)
                    for nid in node_ids]
        replies = [r for r in grid.send_and_receive(messages, timeout=self.cfg.round_timeout)]
        for reply in replies:
            if reply.has_error():
                log.warning("%s: node %s failed: %s", message_type, reply.metadata.src_node_id,
                            reply.error.reason)
        return [r for r in replies if not r.has_error()]

    def _calibrate(self, server_round: int, stage: int, arrays: ArrayRecord, grid: Grid) -> dict[str, float]:
        """One query: every client scores its pool and replies its counts on the fixed bins."""
        started = time.perf_counter()
        config = ConfigRecord({"server-round": server_round, "hierarchy": stage, **self._progress_config()})
        if self.reference_rows:
            config[REFERENCE_KEY] = json.dumps(self.reference_rows)
        replies = self._query_all(grid, SCORE_QUERY, RecordDict({
            "arrays": cast_arrays(arrays, self.cfg.transport_dtype), "config": config}))
        stats = [r.content["metrics"] for r in replies]
        summary: dict[str, float] = {"clients": float(len(stats)),
                                     # no count under dp-histogram-epsilon: the noisy histogram's total stands in
                                     "scored": float(sum(int(s.get("count", 0)) for s in stats)),
                                     "client-score-seconds": float(sum(float(s["seconds"]) for s in stats)),
                                     "client-setup-seconds": float(sum(float(s["setup-seconds"]) for s in stats)),
                                     # clients on separate hosts: the query phase lasts as long as the slowest
                                     "client-score-seconds-max": max((float(s["seconds"]) for s in stats), default=0.0),
                                     "client-setup-seconds-max": max((float(s["setup-seconds"]) for s in stats),
                                                                     default=0.0)}
        summary.update(self._global_histogram(server_round, stage, [r.content[SKETCH_KEY] for r in replies],
                                              calibrate=True))
        histogram = self.rounds[server_round].histogram
        if self.cfg.dp_histogram_epsilon and histogram:
            summary["scored"] = float(sum(histogram["counts"]))
        summary["seconds"] = time.perf_counter() - started
        return summary

    def _global_histogram(self, server_round: int, stage: int, records: list[ConfigRecord], *,
                          calibrate: bool) -> dict[str, float]:
        """Sum the clients' counts into one histogram per criterion; with `calibrate`, set each
        criterion's lambda from its own (retention mode: fixed at the first hierarchy, then
        re-applied to re-scored data). Returns the first criterion's summary; all are in the log."""
        cfg, entry = self.cfg, self.rounds[server_round]
        sketches = {name: ScoreSketch(cfg.histogram_bins, {}, {}) for name in cfg.criteria}
        for record in records:
            for name, sketch in criteria_from_record(record, cfg.criteria, cfg.histogram_bins).items():
                sketches[name] = sketches[name].merge(sketch)
        if not sketches[cfg.criteria[0]].total:
            outcome = "trains this hierarchy UNFILTERED (no lambda yet)" if self.thresholds is None else \
                f"keeps lambda = {self.thresholds}"
            log.warning("round %d hierarchy %d: no client scores reached the server (%d replies); the run %s",
                        server_round, stage, len(records), outcome)
            return {}
        # With dp-histogram-epsilon the clients' counts carry signed noise: lambda comes from their
        # plain sum (unbiased); what is stored and summarised is clamped to >= the corrupted count.
        histograms = {name: sketch.histogram() for name, sketch in sketches.items()}
        if calibrate and cfg.threshold_mode == "retention" and self.thresholds is None:
            share = criterion_retention(cfg.retention, len(cfg.criteria))
            self.thresholds = {name: lambda_for_retention(signed, edges, share)
                               for name, (edges, signed, _) in histograms.items()}
        thresholds = (self.thresholds if calibrate else entry.thresholds) or {}
        for name, (edges, signed, bad) in histograms.items():
            counts = np.maximum(signed, bad)
            entry.criteria[name] = {
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist(), "bad": bad.tolist()},
                "summary": histogram_summary(edges, counts, bad, thresholds.get(name))}
        first = entry.criteria[cfg.criteria[0]]
        entry.histogram = first["histogram"]
        log.debug("round %d hierarchy %d: lambdas %s from %d clients (%s)", server_round, stage, thresholds,
                  len(records), {name: c["summary"] for name, c in entry.criteria.items()})
        return dict(first["summary"])

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        server_round += self.round_offset
        entry = self.rounds[server_round]
        entry.replies_at = time.time()
        entry.missing = max(0, entry.sent - len(replies))
        if entry.missing:
            log.warning("round %d: %d of %d nodes sent no reply within round-timeout", server_round,
                        entry.missing, entry.sent)
        if entry.rescore and not entry.scoring:  # no query this hierarchy: clients scored inside train
            entry.scoring = self._scored_in_train(server_round, entry.hierarchy, replies)
        usable: list[Message] = []
        for reply in replies:
            if reply.has_error():
                entry.failures += 1
                log.warning("round %d: node %s failed: %s", server_round, reply.metadata.src_node_id,
                            reply.error.reason)
                continue
            metrics, arrays = reply.content["metrics"], reply.content["arrays"]
            if float(metrics["num-examples"]) <= 0 or not arrays_are_finite(arrays):
                entry.excluded += 1
                log.warning("round %d: reply from node %s left out of the aggregate (no examples "
                            "or non-finite weights)", server_round, reply.metadata.src_node_id)
                continue
            reply.content["arrays"] = cast_arrays(arrays, "float32")  # Flower's aggregation math runs in fp32
            usable.append(reply)
            entry.clients.append({"node": float(reply.metadata.src_node_id),
                                  **{k: float(v) for k, v in metrics.items()}})
        needed = max(self.cfg.min_train_replies, dp_replies_needed(self.base))
        if len(usable) < needed:
            why = "min-train-replies" if needed == self.cfg.min_train_replies else "dp-num-sampled-clients"
            log.warning("round %d: %d usable replies, fewer than %s = %d: the global adapter stays as it was",
                        server_round, len(usable), why, needed)
            return None, None
        if self._sent is not None:
            updates = [flat_update(self._sent, r.content["arrays"]) for r in usable]
            entry.update_similarity = cosine_matrix(updates).tolist()
        arrays, metrics = self.base.aggregate_train(server_round, usable)
        entry.aggregated = arrays is not None
        entry.train = dict(metrics) if metrics is not None else {}
        return arrays, metrics

    def _scored_in_train(self, server_round: int, stage: int, replies: list[Message]) -> dict[str, float]:
        """The global histogram from the counts that train replies carry (clients that scored in train)."""
        records = [r.content[SKETCH_KEY] for r in replies if not r.has_error() and SKETCH_KEY in r.content]
        if not records:
            return {}
        first = f"{self.cfg.criteria[0]}/counts"
        summary = {"clients": float(len(records)),
                   "scored": float(sum(int(count) for record in records for count in record[first]))}
        summary.update(self._global_histogram(server_round, stage, records, calibrate=False))
        return summary

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        sampled = 0 < self.cfg.fraction_evaluate < 1
        nodes = self.sampling.nodes(grid, self._query_all, server_round, "evaluate") if sampled else grid
        return self._to_transport(self.base.configure_evaluate(server_round, arrays, ConfigRecord(dict(config)),
                                                               nodes))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        metrics = self.base.aggregate_evaluate(server_round, list(replies))
        if metrics is not None:
            self.rounds[server_round].evaluate = dict(metrics)
        return metrics
