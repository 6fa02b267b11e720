"""FedDQC ServerApp: validate the config, run the strategy, save adapters and metrics."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from feddqc_flwr.app.client_progress import RunLineage
from feddqc_flwr.app.config import ConfigError, RunConfig, parse_run_config
from feddqc_flwr.app.model_spec import load_server_bundle
from feddqc_flwr.app.polling_grid import PollingGrid
from feddqc_flwr.app.progress import RunProgress
from feddqc_flwr.app.quiet import apply_console_mode
from feddqc_flwr.app.results import (
    Checkpoint,
    RunRecorder,
    checkpoint_state,
    load_checkpoint,
    output_root,
    round_record,
)
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from feddqc_flwr.app.strategies.hierarchy_report import hierarchy_report
from feddqc_flwr.app.strategies.privacy import privacy_report, with_privacy
from feddqc_flwr.app.user_errors import show_user_errors_in_one_line
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.evaluation import RowValues, evaluate_rows
from feddqc_flwr.evaluation.choices import closed_answer_set
from feddqc_flwr.llm.model import ModelBundle, adapter_arrays, set_adapter_arrays
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint
from feddqc_flwr.scoring.registry import NEEDS_REFERENCE
from feddqc_flwr.selection.hierarchy import hierarchy_of_round, is_hierarchy_end

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`
app = ServerApp()


@dataclass(frozen=True)
class ServerRows:
    """The server's disjoint row sets, all from the global clean test split."""

    test: list[dict]  # reported results
    valid: list[dict]  # for choosing hyperparameters, so `test` stays unseen
    reference: list[dict]  # anchors sent to clients (nuggets, datainf)


def server_rows(cfg: RunConfig, test_rows: list[dict]) -> ServerRows:
    """Test rows, validation rows and anchor rows for nuggets/datainf, pairwise disjoint.

    Test takes the first `eval-samples` rows and validation the next as many; anchors come from
    the end. When the split is too small for both, the rows left after the anchors are halved
    between test and validation.
    """
    reference: list[dict] = []
    if cfg.method == "feddqc" and cfg.scorer in NEEDS_REFERENCE:
        if len(test_rows) < 2:
            raise ConfigError(f"run config 'scorer' = {cfg.scorer!r} needs reference rows, but the test split "
                              f"has {len(test_rows)} row(s): raise 'test-fraction' or 'max-samples'")
        count = min(cfg.reference_rows, len(test_rows) // 2)
        reference = test_rows[len(test_rows) - count:]
    n = min(cfg.eval_samples, (len(test_rows) - len(reference)) // 2)
    return ServerRows(test=test_rows[:n], valid=test_rows[n: 2 * n], reference=reference)


def server_eval_sets(cfg: RunConfig) -> tuple[ServerRows, tuple[str, ...]]:
    """The server's rows and the dataset's closed answer set (e.g. yes/no/maybe; () for free text).

    The answer set is read from the clean pool and test responses, not from the few evaluation
    rows, which could miss a rare answer. Loading the split also stops the run at start when the
    dataset cannot be read.
    """
    source = split_source(cfg.data_spec)
    closed = closed_answer_set([*source.pool["response"], *source.test["response"]])
    return server_rows(cfg, source.test.to_list()), closed


def evaluate_splits(cfg: RunConfig, bundle: ModelBundle, sets: ServerRows, closed_set: tuple[str, ...],
                    splits: tuple[str, ...] = ("valid", "test"),
                    metrics: tuple[str, ...] | None = None) -> tuple[dict[str, float], RowValues]:
    """`<split>-<metric>` values (valid-loss, test-choice-acc, ...) of the current adapter, and under
    the same keys each row's own value (test-loss: one NLL per test row)."""
    def names(split: str) -> tuple[str, ...]:
        return cfg.split_metric_names(split) if metrics is None else metrics

    judge = ChatEndpoint(cfg.judge_url, cfg.judge_model) if any("judge" in names(s) for s in splits) else None
    out: dict[str, float] = {}
    per_row: RowValues = {}
    for split in splits:
        split_rows: RowValues = {}
        values = evaluate_rows(bundle, getattr(sets, split), names(split), template=cfg.prompt_template,
                               max_length=cfg.max_length, batch_size=cfg.score_batch_size,
                               max_new_tokens=cfg.eval_max_new_tokens, judge=judge, closed_set=closed_set,
                               align_candidates=cfg.eval_align_candidates, row_values=split_rows)
        out.update({f"{split}-{key}": value for key, value in values.items()})
        per_row.update({f"{split}-{key}": value for key, value in split_rows.items()})
    return out, per_row


class RoundEnd:
    """Flower's `evaluate_fn`, run after every round: valid/test metrics, metrics line, checkpoints.

    Flower numbers the rounds of this process from 1; a resumed run adds the rounds already done.
    """

    def __init__(self, cfg: RunConfig, bundle: ModelBundle, strategy: FedDQCStrategy,
                 recorder: RunRecorder, sets: ServerRows, closed_set: tuple[str, ...], progress: RunProgress) -> None:
        self.cfg, self.bundle, self.strategy = cfg, bundle, strategy
        self.recorder, self.sets, self.closed_set, self.progress = recorder, sets, closed_set, progress
        self.last_eval: dict[str, float] = {}

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        started = time.perf_counter()
        server_round += self.strategy.round_offset
        set_adapter_arrays(self.bundle.model, arrays)
        metrics: dict[str, float] = {}
        if (self.sets.test or self.sets.valid) and self.cfg.evaluates_after(server_round):
            values, per_row = evaluate_splits(self.cfg, self.bundle, self.sets, self.closed_set)
            metrics.update(values)
            metrics["seconds"] = time.perf_counter() - started  # for `feddqc bench overhead`
            ids = {split: [str(r.get("sample_id")) for r in getattr(self.sets, split)] for split in ("valid", "test")}
            self.recorder.write_row_values(server_round, ids, per_row)
        self.last_eval = metrics
        if server_round == self.strategy.round_offset:
            resumed = {"resumed_from": self.cfg.resume_from} if self.cfg.resume_from else {}
            self._write({"server_round": server_round, "server_eval": metrics, "time": time.time(), **resumed})
            return MetricRecord(metrics) if metrics else None
        self._write(round_record(self.strategy.rounds[server_round], metrics))
        cfg = self.cfg
        if cfg.method == "feddqc" and is_hierarchy_end(server_round, cfg.num_server_rounds, cfg.stages):
            stage = hierarchy_of_round(server_round, cfg.num_server_rounds, cfg.stages)
            self.bundle.model.save_pretrained(self.recorder.adapter_dir(f"hierarchy-{stage}"))
        state = checkpoint_state(cfg, server_round, self.strategy.thresholds, self.strategy.lineage)
        self.recorder.save_checkpoint(self.bundle.model, state, self.strategy.optimizer_state())
        return MetricRecord(metrics) if metrics else None

    def _write(self, record: dict) -> None:
        """metrics.jsonl first, then the console line and the trackers, from the same record."""
        self.recorder.write_round(record)
        self.progress.record(record)


def run_lineage(cfg: RunConfig, run_name: str, run_id: int, checkpoint: Checkpoint | None) -> RunLineage:
    """The clients' progress lineage: a resumed run continues its checkpoint's (same key, so clients
    find their files); a new run gets a key of its own, so it never reads an older run's progress."""
    if checkpoint is not None and checkpoint.lineage is not None:
        return checkpoint.lineage.resumed(run_id, checkpoint.completed_round + 1)
    first_round = checkpoint.completed_round + 1 if checkpoint is not None else 1
    return RunLineage(f"{run_name}-{secrets.token_hex(4)}", cfg.output_dir, ((run_id, first_round),))


def final_adapter(aggregated: ArrayRecord, initial: ArrayRecord) -> ArrayRecord:
    """The adapter the run saves as final. Flower's `Result.arrays` is an empty record, not None, when
    no round aggregated (every reply failed, or too few came): the run keeps the adapter it started from."""
    return aggregated if len(aggregated) else initial


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedDQC (or plain FedAvg with method=fedavg) for num-server-rounds.

    A UserError (bad key, missing data file or model) ends the run as failed, shown in one line
    (`app.user_errors`, which also says why `flwr run` still exits 0)."""
    show_user_errors_in_one_line()
    cfg = parse_run_config(context.run_config)
    apply_console_mode(cfg.console)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    sets, closed_set = server_eval_sets(cfg)
    bundle = load_server_bundle(cfg, evaluates=bool(sets.test or sets.valid))  # no GPU needed
    strategy = FedDQCStrategy(with_privacy(build_base_strategy(cfg), cfg), cfg, sets.reference)
    initial_arrays = adapter_arrays(bundle.model)
    checkpoint = None
    if cfg.resume_from:
        checkpoint = load_checkpoint(cfg, list(initial_arrays))  # the order clients reply in
        strategy.resume(checkpoint.completed_round, checkpoint.thresholds)
        strategy.load_optimizer_state(checkpoint.optimizer)
        initial_arrays = checkpoint.arrays
        log.info("resuming %s after round %d (lambdas=%s)", cfg.resume_from, checkpoint.completed_round,
                 checkpoint.thresholds)
    recorder = RunRecorder(cfg, output_root(cfg), context.run_id)
    strategy.lineage = run_lineage(cfg, recorder.run_dir.name, context.run_id, checkpoint)
    with RunProgress(cfg, recorder.run_dir) as progress:  # trackers end as failed if the run raises
        progress.start(len(split_source(cfg.data_spec).pool), len(sets.valid), len(sets.test))
        round_end = RoundEnd(cfg, bundle, strategy, recorder, sets, closed_set, progress)
        result = strategy.start(
            grid=PollingGrid(grid, cfg.reply_poll_interval),  # every round trip, Flower's own included
            initial_arrays=initial_arrays,
            num_rounds=cfg.num_server_rounds - strategy.round_offset,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            evaluate_fn=round_end,
        )
        set_adapter_arrays(bundle.model, final_adapter(result.arrays, initial_arrays))
        final_dir = recorder.adapter_dir("final")
        bundle.model.save_pretrained(final_dir)
        last_train = strategy.rounds[cfg.num_server_rounds].train if strategy.rounds else {}
        hierarchies = hierarchy_report(strategy.rounds) if cfg.method == "feddqc" else []
        verdict = progress.verdict(time.time() - recorder.started)
        summary_path = recorder.write_summary({
            "final_adapter": str(final_dir),
            "metrics": str(recorder.metrics_path),
            "final_server_eval": round_end.last_eval,
            "final_train_metrics": last_train,
            "threshold": strategy.threshold,
            "thresholds": strategy.thresholds,
            "hierarchies": hierarchies,
            "skipped_rows": dict(split_source(cfg.data_spec).skipped),
            "failures": sum(r.failures for r in strategy.rounds.values()),
            "excluded_replies": sum(r.excluded for r in strategy.rounds.values()),
            "missing_replies": sum(r.missing for r in strategy.rounds.values()),
            "rounds_not_aggregated": [r.server_round for r in strategy.rounds.values() if not r.aggregated],
            "resumed_from": cfg.resume_from or None,
            "privacy": privacy_report(cfg, strategy.base),
            "verdict": verdict,
        })
        tensorboard = (f"\n  TensorBoard: tensorboard --logdir {recorder.run_dir}"
                       if "tensorboard" in cfg.trackers else "")
        message = (f"FedDQC run finished.\n  adapter (PEFT): {final_dir}\n  metrics: {recorder.metrics_path}\n"
                   f"  summary: {summary_path}{tensorboard}")
        log.info(message)
        progress.finish(verdict)
