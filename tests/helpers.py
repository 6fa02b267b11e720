"""Small builders shared by tests."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from feddqc_flwr.config import RunConfig, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def default_run_config() -> dict[str, Any]:
    """The embedded default `[tool.flwr.app.config]`."""
    return dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])


def make_config(**overrides: Any) -> RunConfig:
    """Default config with kebab-case overrides given as snake_case keywords."""
    raw = default_run_config()
    raw.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return parse_run_config(raw)
