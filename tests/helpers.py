"""Small builders shared by tests."""

from __future__ import annotations

from typing import Any

from feddqc_flwr.config import RunConfig, parse_run_config
from feddqc_flwr.run_defaults import default_run_config


def make_config(**overrides: Any) -> RunConfig:
    """Default config with kebab-case overrides given as snake_case keywords."""
    raw = default_run_config()
    raw.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return parse_run_config(raw)
