"""The app's embedded default run config, read from the project's pyproject.toml, and the
paper's settings shipped as a preset.

`flwr run` merges `--run-config` overrides over these defaults; tools that build run configs
outside Flower (the experiment harness, `feddqc eval`) do the same merge with this table.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_run_config(project: Path = PROJECT_ROOT) -> dict[str, Any]:
    """`[tool.flwr.app.config]` of `project`/pyproject.toml."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        raise FileNotFoundError(f"no pyproject.toml in {project}: pass the Flower app folder (--app)")
    return dict(tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"])


def paper_preset() -> dict[str, Any]:
    """The FedDQC paper's settings (feddqc_flwr/presets/paper.toml) over the embedded defaults."""
    preset = Path(__file__).resolve().parents[1] / "presets" / "paper.toml"
    return {**default_run_config(), **tomllib.loads(preset.read_text())}
