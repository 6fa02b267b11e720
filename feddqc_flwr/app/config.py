"""The one run config: `[tool.flwr.app.config]` keys, typed and validated at start.

Both apps build a `RunConfig` from `context.run_config` before doing any work, so a typo or
an out-of-range value stops the run with a message naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.errors import UserError
from feddqc_flwr.selection.hierarchy import ORDERS

METHODS = ("feddqc", "fedavg")
SCORERS = ("ira", "ira-sum", "ppl", "loss", "ifd", "nuggets", "datainf", "random", "ds2",
           "instructmining", "ira-sum+loss")  # = scoring.registry
THRESHOLD_MODES = ("lambda", "retention")
FILTERED_ROWS = ("rescore", "drop")  # Algorithm 1 re-scores rows under lambda at the next stage; drop = for good
LAMBDA_SCORERS = ("ira", "ira-sum")  # scorers whose raw score is on an absolute scale ira-lambda can name
MULTI_CRITERIA_SCORERS = ("ira-sum+loss",)  # threshold-mode = lambda takes their lambdas from criterion-lambdas
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadagrad", "fedyogi", "fedadam")
# A reply's weight in the aggregate: the client's training rows (FedDQC/OpenFedLLM code), its stage's rows,
# or 1 per client that trained (equal weights: what the DP noise scale z·C/n assumes)
AGGREGATION_WEIGHTS = ("dataset", "stage", "uniform")
# Flower's central-DP wrappers around the aggregation rule: clipping on the server or the clients, fixed or adaptive
DP_MODES = ("none", "server-fixed", "server-adaptive", "client-fixed", "client-adaptive")
QUANTIZATIONS = ("none", "8bit", "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCORE_DTYPES = ("auto", "float32", "bfloat16", "float16")  # = precision.resolve_score_dtype
TRANSPORT_DTYPES = ("float32", "float16")
TEMPLATES = ("alpaca", "chat")
PARTITIONERS = ("iid", "dirichlet", "quality", "natural")
CORRUPT_TYPES = ("none", "swap", "delete", "cut", "substitute", "noisy", "mixture")
EVAL_METRICS = ("loss", "choice", "generation", "similarity", "judge", "alignment", "exact-match")  # = evaluation.suite
CONSOLE_MODES = ("progress", "verbose")  # = app.quiet
TRACKERS = ("tensorboard", "wandb", "mlflow")  # = app.tracking; "none" turns tracking off


class ConfigError(UserError, ValueError):
    """A run-config value that the app cannot use."""


@dataclass(frozen=True)
class RunConfig:
    """Typed view of the run config; field names are the keys with '-' -> '_'."""

    method: str
    num_server_rounds: int
    hierarchies: int
    order: str
    fraction_train: float
    min_train_nodes: int
    fraction_evaluate: float
    round_timeout: float
    reply_poll_interval: float
    min_train_replies: int
    scorer: str
    reference_rows: int
    rater_url: str
    rater_model: str
    instructmining_rule: str
    threshold_mode: str
    filtered_rows: str
    ira_lambda: float
    criterion_lambdas: str
    retention: float
    histogram_bins: int
    score_batch_size: int
    score_dtype: str
    local_steps: int
    batch_size: int
    grad_accum: int
    max_length: int
    lr_max: float
    lr_min: float
    prompt_template: str
    model: str
    quantization: str
    dtype: str
    transport_dtype: str
    gradient_checkpointing: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str
    strategy: str
    aggregation_weight: str
    proximal_mu: float
    server_learning_rate: float
    server_momentum: float
    fedopt_eta: float
    fedopt_beta1: float
    fedopt_beta2: float
    fedopt_tau: float
    dp_mode: str
    dp_clipping_norm: float
    dp_noise_multiplier: float
    dp_num_sampled_clients: int
    dp_target_clipped_quantile: float
    dp_clip_norm_lr: float
    dp_clipped_count_stddev: float
    dp_histogram_epsilon: float
    dataset: str
    field_map: str
    partitioner: str
    partition_by: str
    dirichlet_alpha: float
    corrupt_ratio: float
    corrupt_type: str
    client_corrupt_ratios: str
    max_samples: int
    max_response_words: int
    valid_fraction: float
    test_fraction: float
    eval_samples: int
    eval_every: int
    eval_metrics: str
    eval_valid_metrics: str
    eval_max_new_tokens: int
    eval_align_candidates: int
    judge_url: str
    judge_model: str
    seed: int
    split_seed: int
    data_map: bool
    console: str
    tracking: str
    output_dir: str
    resume_from: str

    @property
    def data_spec(self) -> DataSpec:
        """The data options as the data layer wants them."""
        return DataSpec(
            source=self.dataset,
            field_map=self.field_map,
            partitioner=self.partitioner,
            partition_by=self.partition_by,
            dirichlet_alpha=self.dirichlet_alpha,
            corrupt_ratio=self.corrupt_ratio,
            corrupt_type=self.corrupt_type,
            client_corrupt_ratios=self.client_corrupt_ratios,
            max_samples=self.max_samples,
            max_response_words=self.max_response_words,
            valid_fraction=self.valid_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            split_seed=None if self.split_seed < 0 else self.split_seed,
        )

    @property
    def criteria(self) -> tuple[str, ...]:
        """The scorer's criteria, each with its own threshold: 'ira-sum+loss' has two (= scoring.criteria)."""
        return tuple(self.scorer.split("+"))

    @property
    def named_lambdas(self) -> dict[str, float]:
        """threshold-mode = lambda: one lambda per criterion, from `ira-lambda` or `criterion-lambdas`."""
        if len(self.criteria) == 1:
            return {self.scorer: self.ira_lambda}
        pairs = [p.split("=", 1) for p in self.criterion_lambdas.split(",") if p.strip()]
        return {name.strip(): float(value) for name, value in pairs}

    def evaluates_after(self, server_round: int) -> bool:
        """Whether the server evaluates after `server_round`: round 0 (the start), every
        `eval-every`-th round and the last, so a run always has its first and final values."""
        return server_round in (0, self.num_server_rounds) or server_round % self.eval_every == 0

    @property
    def trackers(self) -> tuple[str, ...]:
        """`tracking` as a tuple of tracker names; () for "none"."""
        names = tuple(t.strip() for t in self.tracking.split(",") if t.strip())
        return () if names == ("none",) else names

    @property
    def eval_metric_names(self) -> tuple[str, ...]:
        """`eval-metrics` as a tuple of metric names."""
        return tuple(m.strip() for m in self.eval_metrics.split(",") if m.strip())

    def split_metric_names(self, split: str) -> tuple[str, ...]:
        """The metrics the server computes on `split`: `eval-metrics`, or on the validation rows
        `eval-valid-metrics` when set (a cheap selection metric beside slow test metrics)."""
        names = self.eval_valid_metrics if split == "valid" and self.eval_valid_metrics.strip() else self.eval_metrics
        return tuple(m.strip() for m in names.split(",") if m.strip())

    @property
    def stages(self) -> int:
        """Hierarchies actually run: order = none trains one filtered, shuffled stage."""
        return 1 if self.order == "none" else self.hierarchies

    @property
    def target_modules(self) -> list[str] | str:
        """LoRA target modules as peft takes them."""
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def as_dict(self) -> dict[str, Any]:
        """The config with its original kebab-case keys (for run summaries)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"run config '{key}' = {value!r}: allowed values are {', '.join(allowed)}")


def _in_range(key: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise ConfigError(f"run config '{key}' = {value!r}: must be in {left}{lo}, {hi}]")


def _coerce(key: str, raw: Any, kind: type) -> Any:
    """Flower hands TOML ints for floats like `1`, and strings from --run-config may be typed."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"run config '{key}' = {raw!r}: must be true or false")
    if kind is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is str and isinstance(raw, str):
        return raw
    raise ConfigError(f"run config '{key}' = {raw!r}: must be of type {kind.__name__}")


def parse_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Build and validate a RunConfig; unknown or missing keys are errors."""
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(run_config) - set(fields))
    if unknown:
        raise ConfigError(f"unknown run config key(s): {', '.join(unknown)}")
    missing = sorted(set(fields) - set(run_config))
    if missing:
        raise ConfigError(f"run config is missing key(s): {', '.join(missing)}")
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    values = {f.name: _coerce(key, run_config[key], kinds[str(f.type)]) for key, f in fields.items()}
    cfg = RunConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: RunConfig) -> None:
    _choice("method", cfg.method, METHODS)
    if cfg.split_seed < -1:
        raise ConfigError(f"run config 'split-seed' = {cfg.split_seed}: must be >= 0, or -1 to follow 'seed'")
    _choice("scorer", cfg.scorer, SCORERS)
    _choice("order", cfg.order, ORDERS)
    _choice("threshold-mode", cfg.threshold_mode, THRESHOLD_MODES)
    _choice("filtered-rows", cfg.filtered_rows, FILTERED_ROWS)
    _choice("strategy", cfg.strategy, STRATEGIES)
    _choice("aggregation-weight", cfg.aggregation_weight, AGGREGATION_WEIGHTS)
    _choice("quantization", cfg.quantization, QUANTIZATIONS)
    _choice("dtype", cfg.dtype, DTYPES)
    _choice("score-dtype", cfg.score_dtype, SCORE_DTYPES)
    _choice("transport-dtype", cfg.transport_dtype, TRANSPORT_DTYPES)
    _choice("prompt-template", cfg.prompt_template, TEMPLATES)
    _choice("partitioner", cfg.partitioner, PARTITIONERS)
    _choice("corrupt-type", cfg.corrupt_type, CORRUPT_TYPES)
    if cfg.num_server_rounds < 1:
        raise ConfigError(f"run config 'num-server-rounds' = {cfg.num_server_rounds}: must be >= 1")
    if not 1 <= cfg.hierarchies <= cfg.num_server_rounds:
        raise ConfigError(
            f"run config 'hierarchies' = {cfg.hierarchies}: must be between 1 and "
            f"num-server-rounds ({cfg.num_server_rounds})"
        )
    for key in ("min-train-nodes", "min-train-replies", "eval-every", "histogram-bins", "score-batch-size",
                "local-steps", "batch-size", "grad-accum", "lora-r", "lora-alpha"):
        value = getattr(cfg, key.replace("-", "_"))
        if value < 1:
            raise ConfigError(f"run config '{key}' = {value}: must be >= 1")
    if cfg.max_length < 16:
        raise ConfigError(f"run config 'max-length' = {cfg.max_length}: must be >= 16")
    if cfg.threshold_mode == "lambda":
        _validate_lambdas(cfg)
    for key in ("max-samples", "max-response-words", "eval-samples", "reference-rows"):
        if getattr(cfg, key.replace("-", "_")) < 0:
            raise ConfigError(f"run config '{key}': must be >= 0 (0 = no limit / off)")
    _in_range("fraction-train", cfg.fraction_train, 0.0, 1.0, lo_open=True)
    _in_range("fraction-evaluate", cfg.fraction_evaluate, 0.0, 1.0)
    _in_range("retention", cfg.retention, 0.0, 1.0, lo_open=True)
    _in_range("lora-dropout", cfg.lora_dropout, 0.0, 1.0)
    _in_range("corrupt-ratio", cfg.corrupt_ratio, 0.0, 1.0)
    _in_range("valid-fraction", cfg.valid_fraction, 0.0, 0.9)
    _in_range("test-fraction", cfg.test_fraction, 0.0, 0.9)
    _validate_evaluation(cfg)
    _validate_output(cfg)
    _validate_privacy(cfg)
    _in_range("lr-max", cfg.lr_max, 0.0, 1.0, lo_open=True)
    _in_range("lr-min", cfg.lr_min, 0.0, cfg.lr_max)
    _in_range("round-timeout", cfg.round_timeout, 0.0, 7 * 24 * 3600.0, lo_open=True)
    _in_range("reply-poll-interval", cfg.reply_poll_interval, 0.0, 60.0, lo_open=True)
    if cfg.rater_url and not cfg.rater_model:
        raise ConfigError(f"run config 'rater-url' = {cfg.rater_url!r} needs 'rater-model' (the served model name)")
    if cfg.resume_from != cfg.resume_from.strip():
        raise ConfigError(f"run config 'resume-from' = {cfg.resume_from!r}: remove the surrounding spaces")
    if not cfg.target_modules:
        raise ConfigError("run config 'lora-target-modules' is empty: give module names or all-linear")


def check_training_device(cfg: RunConfig) -> None:
    """8/4-bit is for the nodes that train and score (ClientApps): they need bitsandbytes, on CUDA
    or with its CPU backend (bitsandbytes >= 0.48 trains LoRA over 8/4-bit weights on a CPU too).

    Not part of `parse_run_config`, because the ServerApp parses the same config and needs neither:
    without CUDA it evaluates the base model unquantized (`app.model_spec`).
    """
    if cfg.quantization == "none":
        return
    import torch  # here, so that parsing a config does not import torch

    try:
        import bitsandbytes
    except ImportError:
        raise ConfigError(
            f"run config 'quantization' = {cfg.quantization!r}: this node trains and scores the model in "
            f"{cfg.quantization} with bitsandbytes, which is not installed. Install it on every SuperNode "
            "(ClientApp): pip install 'bitsandbytes>=0.48' (on CUDA or a CPU), or set quantization = 'none'. "
            "The ServerApp needs neither bitsandbytes nor a GPU."
        ) from None
    if not torch.cuda.is_available() and "cpu" not in getattr(bitsandbytes, "supported_torch_devices", ()):
        raise ConfigError(
            f"run config 'quantization' = {cfg.quantization!r}: this node has no CUDA GPU and its bitsandbytes "
            f"{bitsandbytes.__version__} has no CPU backend (>= 0.48 has one). Give every SuperNode (ClientApp) "
            "a GPU, upgrade bitsandbytes, or set quantization = 'none'. The ServerApp needs no GPU."
        )


def _validate_lambdas(cfg: RunConfig) -> None:
    """threshold-mode = lambda names a lambda on each criterion's own scale."""
    if cfg.scorer not in (*LAMBDA_SCORERS, *MULTI_CRITERIA_SCORERS):
        raise ConfigError(
            f"run config 'threshold-mode' = 'lambda' uses 'ira-lambda', on the scale of "
            f"{' or '.join(LAMBDA_SCORERS)}, or 'criterion-lambdas' for {', '.join(MULTI_CRITERIA_SCORERS)}; "
            f"with 'scorer' = {cfg.scorer!r} use threshold-mode = 'retention'")
    if len(cfg.criteria) == 1:
        return
    example = ", ".join(f"{c}=<value>" for c in cfg.criteria)
    try:
        named = cfg.named_lambdas
    except ValueError:
        named = {}
    if sorted(named) != sorted(cfg.criteria) or len(cfg.criterion_lambdas.split(",")) != len(cfg.criteria):
        raise ConfigError(f"run config 'criterion-lambdas' = {cfg.criterion_lambdas!r}: with scorer = "
                          f"{cfg.scorer!r} and threshold-mode = 'lambda' give one keep-score lambda per "
                          f"criterion, as \"{example}\"")


def _validate_evaluation(cfg: RunConfig) -> None:
    names = cfg.eval_metric_names
    if not names:
        raise ConfigError(f"run config 'eval-metrics' is empty: give a comma list of {', '.join(EVAL_METRICS)}")
    for name in names:
        _choice("eval-metrics", name, EVAL_METRICS)
    for name in cfg.split_metric_names("valid"):
        _choice("eval-valid-metrics", name, EVAL_METRICS)
    if cfg.eval_max_new_tokens < 1:
        raise ConfigError(f"run config 'eval-max-new-tokens' = {cfg.eval_max_new_tokens}: must be >= 1")
    if cfg.eval_align_candidates < 2:
        raise ConfigError(f"run config 'eval-align-candidates' = {cfg.eval_align_candidates}: must be >= 2 (a "
                          "question's own answer and at least one other)")
    if "judge" in names and not (cfg.judge_url.strip() and cfg.judge_model.strip()):
        raise ConfigError("run config 'eval-metrics' includes 'judge': set 'judge-url' (an OpenAI-compatible "
                          "endpoint, e.g. http://localhost:8000/v1) and 'judge-model'")


def _validate_privacy(cfg: RunConfig) -> None:
    """The DP keys, checked whether or not `dp-mode` uses them, so a preset never hides a bad value."""
    _choice("dp-mode", cfg.dp_mode, DP_MODES)
    if cfg.dp_clipping_norm <= 0:
        raise ConfigError(f"run config 'dp-clipping-norm' = {cfg.dp_clipping_norm}: must be > 0")
    if cfg.dp_noise_multiplier < 0:
        raise ConfigError(f"run config 'dp-noise-multiplier' = {cfg.dp_noise_multiplier}: must be >= 0")
    if cfg.dp_num_sampled_clients < 1:
        raise ConfigError(f"run config 'dp-num-sampled-clients' = {cfg.dp_num_sampled_clients}: must be >= 1")
    _in_range("dp-target-clipped-quantile", cfg.dp_target_clipped_quantile, 0.0, 1.0)
    if cfg.dp_clip_norm_lr <= 0:
        raise ConfigError(f"run config 'dp-clip-norm-lr' = {cfg.dp_clip_norm_lr}: must be > 0")
    if cfg.dp_clipped_count_stddev < 0:
        raise ConfigError(f"run config 'dp-clipped-count-stddev' = {cfg.dp_clipped_count_stddev}: must be >= 0 "
                          "(0 = dp-num-sampled-clients/20, Flower's default)")
    if cfg.dp_histogram_epsilon < 0:
        raise ConfigError(f"run config 'dp-histogram-epsilon' = {cfg.dp_histogram_epsilon}: must be >= 0 "
                          "(0 = exact counts, no noise)")
    if cfg.dp_mode.endswith("-adaptive") and cfg.dp_noise_multiplier > 0:
        # Andrew et al.: the clipped-count noise takes part of the budget, z_eff = (z^-2 - (2·σ_b)^-2)^-1/2
        stddev = cfg.dp_clipped_count_stddev or cfg.dp_num_sampled_clients / 20
        if cfg.dp_noise_multiplier >= 2 * stddev:
            raise ConfigError(
                f"run config 'dp-noise-multiplier' = {cfg.dp_noise_multiplier}: with dp-mode = {cfg.dp_mode!r} it "
                f"must be below 2 x 'dp-clipped-count-stddev' = {2 * stddev:g} (0 there means "
                f"dp-num-sampled-clients/20); raise 'dp-clipped-count-stddev' or lower the noise multiplier")
    if cfg.dp_mode.startswith("client-") and cfg.transport_dtype != "float32":
        raise ConfigError(
            f"run config 'dp-mode' = {cfg.dp_mode!r} clips on the clients in the wire dtype, and "
            f"'transport-dtype' = {cfg.transport_dtype!r} rounding can push a clipped update past the clipping "
            "norm: use transport-dtype = 'float32' or a server-side dp-mode")


def _validate_output(cfg: RunConfig) -> None:
    _choice("console", cfg.console, CONSOLE_MODES)
    if not cfg.trackers and cfg.tracking.strip() != "none":
        raise ConfigError(f"run config 'tracking' = {cfg.tracking!r}: give a comma list of {', '.join(TRACKERS)}, "
                          "or none")
    for name in cfg.trackers:
        _choice("tracking", name, TRACKERS)
