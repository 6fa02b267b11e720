"""FedDQC ClientApp: score, filter and train on the client's own device.

Message types:
- `query.score`  (hierarchy start, only before the first lambda): load the global adapter, score
  the pool with the configured scorer, keep the scores in `context.state` and the node-local
  progress file (`app.client_progress`, read back after a SuperNode restart or a resume), reply
  the count and, per criterion of the scorer, the counts per fixed score bin
  (`selection.score_sketch`).
- `query.identity`: reply the node's partition id (only when clients are sampled, for seeding).
- `train`: pick this hierarchy's subset (top of the sorted, filtered pool) if not done yet,
  scoring the pool first if no query did, train `local-steps`, reply adapter weights and scalar
  metrics (and the bin counts when it scored). A row is kept only when every criterion's score
  reaches that criterion's lambda. The pool is every row not trained yet (Algorithm 1), rows
  under lambda included unless `filtered-rows = "drop"`.
- `evaluate`: held-out loss on the client's clean validation split.
Raw text, token ids and per-sample scores never leave the client; each selection rewrites the
owner's per-row report of them on the node's own disk (`app.quality_report`).

In deployment every message runs in a fresh process, so torch, transformers, peft and datasets
are imported inside the handlers that need them: `query.identity` pays for flwr and numpy only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.client_privacy import client_clipping_mod, noisy_counts
from feddqc_flwr.app.client_progress import (
    ClientProgress,
    ProgressFile,
    RunLineage,
    load_progress,
    progress_path,
    save_progress,
)
from feddqc_flwr.app.config import RunConfig, parse_run_config
from feddqc_flwr.app.packed_arrays import packing_mod
from feddqc_flwr.app.protocol import REFERENCE_KEY, SKETCH_KEY
from feddqc_flwr.app.quiet import apply_console_mode
from feddqc_flwr.app.user_errors import user_error_mod
from feddqc_flwr.data.spec import ClientData
from feddqc_flwr.selection.hierarchy import passes_all, select_stage
from feddqc_flwr.selection.quality_metrics import quality_by_type, selection_quality
from feddqc_flwr.selection.score_sketch import ScoreSketch, criteria_record

if TYPE_CHECKING:
    from datasets import Dataset

    from feddqc_flwr.llm.model import ModelBundle

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`
# packing_mod outermost: every handler and mod sees the adapter unpacked; user_error_mod turns a
# UserError (bad key, missing data file or model) into a one-line error reply, not a traceback
app = ClientApp(mods=[packing_mod, user_error_mod])


@dataclass
class ClientSetup:
    """Everything a handler needs, built from the run config and cached process resources."""

    cfg: RunConfig
    bundle: ModelBundle
    data: ClientData
    partition_id: int
    seconds: float  # config, data, model (cached per process in simulation) and the received adapter

    @property
    def seed(self) -> int:
        """This client's seed: distinct per client, fixed by the run's seed."""
        return self.cfg.seed * 1_000_003 + self.partition_id


def _client_data(cfg: RunConfig, context: Context) -> ClientData:
    from feddqc_flwr.data.client_data import load_client_data

    return load_client_data(cfg.data_spec, int(context.node_config["partition-id"]),
                            int(context.node_config["num-partitions"]))


def _setup(msg: Message, context: Context) -> ClientSetup:
    from feddqc_flwr.app.model_spec import spec_from_config
    from feddqc_flwr.llm.model import load_model_bundle, set_adapter_arrays

    started = time.perf_counter()
    cfg = parse_run_config(context.run_config)
    apply_console_mode(cfg.console)
    partition_id = int(context.node_config["partition-id"])
    data = _client_data(cfg, context)
    bundle = load_model_bundle(spec_from_config(cfg))
    set_adapter_arrays(bundle.model, msg.content["arrays"])
    return ClientSetup(cfg, bundle, data, partition_id, time.perf_counter() - started)


def _progress_file(context: Context, config: ConfigRecord, train: Dataset) -> ProgressFile | None:
    """Where this client keeps its progress for the run the server names, or None (context.state only).

    Keyed by the server's run key, not Flower's run id, so a resumed run (a new run id) finds it.
    """
    from feddqc_flwr.app.results import resolve_output_dir

    lineage = RunLineage.from_config(config)
    if lineage is None:
        return None
    path = progress_path(resolve_output_dir(lineage.output_dir), lineage.key,
                         int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    return ProgressFile(path, lineage, int(context.run_id), int(config["server-round"]), train)


def _keep_reference_rows(config: ConfigRecord, context: Context) -> None:
    """Store the anchor rows a score query or a hierarchy's first train message carries."""
    if REFERENCE_KEY in config:
        context.state.config_records[REFERENCE_KEY] = ConfigRecord({"rows": config[REFERENCE_KEY]})


def _reference_rows(context: Context) -> list[dict]:
    """Anchor/validation rows the server sent last (nuggets, datainf)."""
    if REFERENCE_KEY not in context.state.config_records:
        return []
    return json.loads(str(context.state.config_records[REFERENCE_KEY]["rows"]))


def _score_pool(setup: ClientSetup, progress: ClientProgress, stage: int, context: Context) -> float:
    """Keep-scores (higher = better) of every pool sample with the current global adapter."""
    from feddqc_flwr.app.results import client_local_dir
    from feddqc_flwr.llm.precision import resolve_score_dtype
    from feddqc_flwr.scoring.base import ScoringContext
    from feddqc_flwr.scoring.criteria import score_columns
    from feddqc_flwr.scoring.registry import get_scorer

    started = time.perf_counter()
    cfg, bundle = setup.cfg, setup.bundle
    scoring = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=cfg.prompt_template,
                             max_length=cfg.max_length, batch_size=cfg.score_batch_size, device=bundle.device,
                             compute_dtype=resolve_score_dtype(cfg.score_dtype, bundle.device),
                             reference_rows=_reference_rows(context), seed=setup.seed,
                             options={"rater-url": cfg.rater_url, "rater-model": cfg.rater_model,
                                      "instructmining-rule": cfg.instructmining_rule})
    scorer = get_scorer(cfg.scorer)
    scores = score_columns(scorer, list(setup.data.train.select(progress.pool)), scoring)
    if getattr(scorer, "last_report", None):  # DS2's transition matrix: node-local, for the run report
        path = client_local_dir(cfg, context.run_id) / f"ds2-partition-{setup.partition_id}-stage-{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scorer.last_report))
    progress.scored_stage, progress.scored_ids = stage, list(progress.pool)
    progress.scores, progress.score_columns = scores.tolist(), scores.shape[1]
    unscorable = int(np.isnan(scores).any(axis=1).sum())
    if unscorable:
        log.warning("partition %d: %d samples could not be scored and will be dropped",
                    setup.partition_id, unscorable)
    return time.perf_counter() - started


def _sketch(setup: ClientSetup, progress: ClientProgress) -> ConfigRecord:
    """Counts of the fresh scores per fixed bin, one histogram per criterion, and of the
    synthetically corrupted rows among them.

    With `dp-histogram-epsilon` every bin from the lowest to the highest non-empty one carries
    Laplace noise (drawn from OS entropy, not the seed), so which bins inside that range are empty
    stays hidden; the range itself (lowest and highest score, to a bin) is sent as it is. One row
    moves one count in each of the C histograms, so each gets noise of scale C/epsilon: the reply
    as a whole spends epsilon.
    """
    rows = setup.data.train.select(progress.scored_ids) if progress.scored_ids else None
    flags = np.asarray(rows["is_bad"] if rows is not None else [], dtype=bool)
    scores, criteria = progress.score_matrix(), setup.cfg.criteria
    sketches = {name: ScoreSketch.of(scores[:, c], flags, setup.cfg.histogram_bins) for c, name in enumerate(criteria)}
    epsilon = setup.cfg.dp_histogram_epsilon / len(criteria)
    if epsilon:
        rng = np.random.default_rng()
        sketches = {name: sketch.noisy(lambda counts: noisy_counts(counts, epsilon, rng))
                    for name, sketch in sketches.items()}
    return ConfigRecord(criteria_record(sketches))


@app.query("score")
def score(msg: Message, context: Context) -> Message:
    """Re-score the not-yet-trained pool at a hierarchy start; reply the counts per fixed bin."""
    setup = _setup(msg, context)
    config = msg.content["config"]
    _keep_reference_rows(config, context)
    store = _progress_file(context, config, setup.data.train)
    progress = load_progress(context.state, len(setup.data.train), store)
    seconds = _score_pool(setup, progress, int(config["hierarchy"]), context)
    save_progress(progress, context.state, store)
    sketch = _sketch(setup, progress)
    metrics = {"seconds": seconds, "setup-seconds": setup.seconds}
    if not setup.cfg.dp_histogram_epsilon:  # the exact count would undo the noise: under DP it is not sent
        metrics["count"] = int(np.isfinite(progress.score_matrix()).all(axis=1).sum())
    return Message(RecordDict({"metrics": MetricRecord(metrics), SKETCH_KEY: sketch}), reply_to=msg)


@app.query("identity")
def identity(msg: Message, context: Context) -> Message:
    """This node's partition id (a node-config number, no data), so seeded sampling names the same clients."""
    metrics = {"partition-id": int(context.node_config["partition-id"])}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def _select_for_stage(setup: ClientSetup, progress: ClientProgress, stage: int, thresholds: np.ndarray,
                      context: Context, store: ProgressFile | None) -> float:
    """Pick this stage's training subset once; scores now if no query did (or it missed us).

    Then rewrites the owner's node-local quality report beside the progress file (before the
    progress is saved, so a client killed in between redoes both)."""
    from feddqc_flwr.app.quality_report import write_quality_report
    from feddqc_flwr.app.results import client_local_dir

    seconds = 0.0
    if progress.scored_stage != stage:
        seconds = _score_pool(setup, progress, stage, context)
    chosen = select_stage(progress.scored_ids, progress.score_matrix(), thresholds, stage,
                          setup.cfg.stages, order=setup.cfg.order, seed=setup.seed)
    progress.take_stage(stage, chosen, setup.cfg.filtered_rows)
    folder = store.path.parent if store is not None else client_local_dir(setup.cfg, context.run_id)
    write_quality_report(folder, setup.cfg, (setup.partition_id, int(context.node_config["num-partitions"])),
                         setup.data.train, progress, thresholds)
    return seconds


def _selection_quality(scores: np.ndarray, rows: Dataset, kept_share: float) -> dict[str, float]:
    """AUROC and removal quality of scores against the rows' corruption flags.

    Flags exist only for synthetic corruption; on real data, or with no scores, every value is
    NaN. The keys are the same in every reply, as Flower's strategies require.
    """
    from feddqc_flwr.data.corruption import BASE_TYPES

    quality = selection_quality(scores, rows["is_bad"], kept_share) if len(scores) else {}
    by_type = quality_by_type(scores, rows["is_bad"], rows["bad_type"], kept_share) if len(scores) else {}
    out = {key.replace("_", "-"): float(quality.get(key, np.nan))
           for key in ("auroc", "kept_clean_fraction", "removal_precision", "removal_recall")}
    out.update({f"auroc-{t}": float(by_type.get(t, {}).get("auroc", np.nan)) for t in BASE_TYPES})
    return out


def _quality_metrics(setup: ClientSetup, progress: ClientProgress, thresholds: np.ndarray) -> dict[str, float]:
    """Scalar summaries of the stage's selection (bad counts only exist for synthetic corruption).

    `kept` counts the rows passing every criterion, `kept-<criterion>` those passing that one;
    AUROC is of the joint keep-score (rank-min over criteria; the score itself with one criterion);
    the quantiles are of the first criterion.
    """
    from feddqc_flwr.selection.joint_rank import joint_keep_score

    matrix = progress.score_matrix()
    scores = joint_keep_score(matrix) if len(matrix) else np.zeros(0)
    first = matrix[:, 0][np.isfinite(matrix[:, 0])]
    # Exact quantiles would tell what dp-histogram-epsilon's noise hides: NaN then (the keys stay).
    private = bool(setup.cfg.dp_histogram_epsilon)
    quantiles = np.quantile(first, [0.1, 0.5, 0.9]) if first.size and not private else [np.nan] * 3
    flags = setup.data.train.select(progress.stage_train)["is_bad"] if progress.stage_train else []
    pool_flags = setup.data.train.select(progress.scored_ids)["is_bad"] if progress.scored_ids else []
    kept = float(passes_all(matrix, thresholds).sum())
    per_criterion = {f"kept-{name}": float(passes_all(matrix[:, [c]], thresholds[[c]]).sum())
                     for c, name in enumerate(setup.cfg.criteria)}
    return {
        **per_criterion,
        "pool": float(len(scores)),
        "pool-bad": float(sum(bool(f) for f in pool_flags)),
        "kept": kept,
        "dropped": float(progress.dropped),
        "stage-train": float(len(progress.stage_train)),
        "stage-bad": float(sum(bool(f) for f in flags)),
        "score-q10": float(quantiles[0]),
        "score-q50": float(quantiles[1]),
        "score-q90": float(quantiles[2]),
        **_selection_quality(scores, setup.data.train.select(progress.scored_ids), kept / max(1, len(scores))),
    }


def _baseline_metrics(setup: ClientSetup) -> dict[str, float]:
    """The same keys for plain FedAvg, where every training row is used."""
    n = float(len(setup.data.train))
    nan = float("nan")
    bad = float(sum(bool(f) for f in setup.data.train["is_bad"]))
    return {**{f"kept-{name}": n for name in setup.cfg.criteria},
            "pool": n, "pool-bad": bad, "kept": n, "dropped": 0.0, "stage-train": n, "stage-bad": bad,
            "score-q10": nan, "score-q50": nan, "score-q90": nan,
            **_selection_quality(np.zeros(0), setup.data.train, 1.0)}


def _record_dynamics(setup: ClientSetup, context: Context, server_round: int) -> None:
    """Per-sample response probabilities under the received global adapter, kept node-local."""
    from feddqc_flwr.app.results import client_local_dir
    from feddqc_flwr.training.dynamics import append_round, response_probabilities

    cfg = setup.cfg
    probs = response_probabilities(setup.bundle, setup.data.train, template=cfg.prompt_template,
                                   max_length=cfg.max_length, batch_size=cfg.score_batch_size)
    path = client_local_dir(cfg, context.run_id) / f"partition-{setup.partition_id}.jsonl"
    append_round(path, server_round, setup.partition_id, setup.data.train, probs)


def aggregation_weight(mode: str, dataset_rows: int, stage_rows: int) -> int:
    """`num-examples`, the reply's weight in Flower's aggregate (`aggregation-weight`).

    `dataset`: the client's whole training set, as FedDQC's and OpenFedLLM's code weight by
    `len(local_dataset)` fixed before selection; `stage`: the rows trained this round; `uniform`: 1,
    the equal weights DP's noise scale assumes. Zero when nothing was trained, so that the strategy
    leaves the unchanged adapter out.
    """
    if stage_rows == 0:
        return 0
    if mode == "uniform":
        return 1
    return dataset_rows if mode == "dataset" else stage_rows


@app.train(mods=[client_clipping_mod])  # clips only under a client-side dp-mode
def train(msg: Message, context: Context) -> Message:
    """Train the global adapter on this hierarchy's subset and send the update back."""
    from feddqc_flwr.llm.model import adapter_arrays, arrays_are_finite, model_load_counts
    from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter

    handler_started = time.perf_counter()  # `handler-seconds`: the whole message inside the ClientApp
    setup = _setup(msg, context)
    cfg, round_cfg = setup.cfg, msg.content["config"]
    server_round = int(round_cfg["server-round"])
    if cfg.data_map:
        _record_dynamics(setup, context, server_round)
    score_seconds = 0.0
    extra: dict[str, ConfigRecord] = {}  # the bin counts, when this message scored the pool
    if cfg.method == "feddqc":
        stage, thresholds = int(round_cfg["hierarchy"]), np.asarray(round_cfg["lambda"], dtype=np.float64)
        _keep_reference_rows(round_cfg, context)
        store = _progress_file(context, round_cfg, setup.data.train)
        progress = load_progress(context.state, len(setup.data.train), store)
        if progress.selected_stage != stage:
            scores_now = progress.scored_stage != stage
            score_seconds = _select_for_stage(setup, progress, stage, thresholds, context, store)
            save_progress(progress, context.state, store)
            if scores_now and bool(round_cfg.get("rescore", False)):  # the server reads sketches of that round only
                extra[SKETCH_KEY] = _sketch(setup, progress)
        rows = setup.data.train.select(progress.stage_train)
        metrics = _quality_metrics(setup, progress, thresholds)
    else:
        rows = setup.data.train
        metrics = _baseline_metrics(setup)
    metrics.update({"score-seconds": score_seconds, "setup-seconds": setup.seconds, **model_load_counts(),
                    "num-examples": aggregation_weight(cfg.aggregation_weight, len(setup.data.train), len(rows))})
    started = time.perf_counter()
    if len(rows) == 0:
        log.warning("partition %d has no samples to train on in round %d", setup.partition_id, server_round)
        metrics.update({"train-loss": float("nan"), "train-prox": float("nan"), "train-micro-batches": 0,
                        "train-rows": 0, "train-seconds": 0.0,
                        "handler-seconds": time.perf_counter() - handler_started})
        return Message(RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord(metrics), **extra}),
                       reply_to=msg)
    result = train_adapter(setup.bundle.model, setup.bundle.tokenizer, list(rows), LocalTrainConfig(
        steps=cfg.local_steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        learning_rate=float(round_cfg["lr"]), max_length=cfg.max_length, template=cfg.prompt_template,
        proximal_mu=float(round_cfg.get("proximal-mu", 0.0)),
        seed=setup.seed + server_round * 101,
    ))
    arrays: ArrayRecord = adapter_arrays(setup.bundle.model, cfg.transport_dtype)
    if not result.finite or not arrays_are_finite(arrays):
        reason = (f"partition {setup.partition_id}: non-finite training loss {result.loss} "
                  f"(proximal {result.prox}) in round {server_round}")
        log.error(reason)
        return Message(error=Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
    metrics.update({"train-loss": result.loss, "train-prox": result.prox,
                    "train-micro-batches": result.micro_batches, "train-rows": result.rows,
                    "train-seconds": time.perf_counter() - started,
                    "handler-seconds": time.perf_counter() - handler_started})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), **extra}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Held-out loss of the global adapter on this client's clean validation split."""
    from feddqc_flwr.evaluation import heldout_loss

    setup = _setup(msg, context)
    loss = heldout_loss(setup.bundle, list(setup.data.valid), template=setup.cfg.prompt_template,
                        max_length=setup.cfg.max_length, batch_size=setup.cfg.score_batch_size)
    metrics = {"eval-loss": loss, "num-examples": len(setup.data.valid)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
