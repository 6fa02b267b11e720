"""Run one experiment cell as a real Flower simulation: `flwr run APP --run-config cell.toml`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from feddqc_flwr.experiment.spec import Cell, Value


class CellFailed(RuntimeError):
    """`flwr run` for a cell exited non-zero or wrote no run directory."""


def toml_value(value: Value) -> str:
    """A TOML literal for a run-config value (strings via JSON escaping, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


class FlowerRunner:
    """Runs cells with the `flwr` CLI next to this Python, in the local simulation federation."""

    def __init__(self, app_dir: Path, federation_config: str, timeout: float | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.app_dir, self.federation_config, self.timeout = app_dir, federation_config, timeout
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**(env or os.environ), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"
        self.flwr = shutil.which("flwr", path=self.env["PATH"]) or "flwr"

    def __call__(self, cell: Cell, cell_dir: Path) -> Path:
        """Run `cell` with outputs under cell_dir/runs; return its run directory."""
        runs = cell_dir / "runs"
        config = {**dict(cell.run_config), "output-dir": str(runs.resolve())}
        config_path = cell_dir / "run-config.toml"
        config_path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in sorted(config.items())))
        command = [self.flwr, "run", str(self.app_dir), "--stream", "--run-config", str(config_path),
                   "--federation-config", self.federation_config]
        with (cell_dir / "flwr.log").open("w") as log:
            try:
                proc = subprocess.run(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise CellFailed(f"{cell.cell_id}: no result within {self.timeout} s") from None
        done = sorted(p.parent for p in runs.glob("*/summary.json"))
        if proc.returncode != 0 or not done:
            tail = (cell_dir / "flwr.log").read_text()[-2000:]
            raise CellFailed(f"{cell.cell_id}: flwr run exited {proc.returncode}; log tail:\n{tail}")
        return done[-1]
