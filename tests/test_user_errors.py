"""Errors raised on purpose read as one line everywhere; library import noise stays out of the console.

`flwr run` and `feddqc` run as the user runs them, in subprocesses: the traceback and the noise
are printed by Flower's processes and by the interpreter, not by code a test could call."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common.constant import ErrorCode

from feddqc_flwr.app.run_defaults import default_run_config
from feddqc_flwr.data.builtin import DEMO_PATH
from tests.helpers import deliver

REPO = Path(__file__).resolve().parents[1]
FEDDQC = Path(sys.executable).parent / "feddqc"
BNB_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
JIT_WARNING = "DeprecationWarning: `torch.jit.script_method` is deprecated"


def _flwr(flwr_env: dict, *args: str) -> subprocess.CompletedProcess:
    flwr = shutil.which("flwr", path=flwr_env["PATH"])
    return subprocess.run([flwr, *args], env=flwr_env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("key, value, message", [
    ("scorer", '"iraa"', "run config 'scorer' = 'iraa': allowed values are ira, "),
    ("dataset", '"{missing}"', "data file {missing}: not found (or not a file)"),
], ids=["config-error", "missing-data-file"])
def test_flwr_run_shows_server_error_in_one_line_and_marks_run_failed(tmp_path: Path, flwr_env: dict, key: str,
                                                                      value: str, message: str) -> None:
    missing = tmp_path / "no-such-rows.jsonl"
    overrides = tmp_path / "run.toml"
    overrides.write_text(f"{key} = {value.format(missing=missing)}\noutput-dir = \"{tmp_path / 'out'}\"\n")
    proc = _flwr(flwr_env, "run", str(REPO), "--stream", "--run-config", str(overrides),
                 "--federation-config", "num-supernodes=1 client-resources-num-cpus=1")
    log = proc.stdout + proc.stderr
    expected = message.format(missing=missing)
    assert "Traceback" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if expected in line]
    assert len(lines) == 1 and "ERROR" in lines[0], log[-3000:]
    # flwr run itself exits 0 whatever the run's status (flwr 1.41, see app.user_errors); the status says it
    run_id = re.search(r"Successfully started run (\d+)", log).group(1)
    listed = _flwr(flwr_env, "ls", "--run-id", run_id, "--format", "json")
    run = json.loads(listed.stdout)["runs"][0]
    assert run["status"] == "finished:failed" and expected in run["status-details"], listed.stdout


@pytest.mark.parametrize("key, name, message", [
    ("dataset", "rows.jsonl", "data file {missing}: not found (or not a file)"),
    ("model", "model-folder", "model '{missing}': no such folder"),
], ids=["missing-data-file", "missing-model"])
def test_client_app_replies_user_error_as_one_line(tmp_path: Path, client_task_identity, caplog, key: str,
                                                    name: str, message: str) -> None:
    missing = tmp_path / name
    run_config = {**default_run_config(), "dataset": str(DEMO_PATH), key: str(missing)}
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=run_config)
    with caplog.at_level(logging.ERROR, logger="flwr"):
        reply = deliver(context, "query.score", RecordDict({"config": ConfigRecord({"hierarchy": 1})}))
    expected = message.format(missing=missing)
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == expected
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"query.score on node 7: {expected}"]
    assert errors[0].exc_info is None


def _feddqc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEDDQC), *args], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)


def _run_dir(root: Path, config: bool = True) -> Path:
    """A run folder as far as `feddqc eval` reads it before loading a model (config.json optional)."""
    (root / "adapters" / "final").mkdir(parents=True)
    (root / "adapters" / "final" / "adapter_model.safetensors").write_bytes(b"")
    if config:
        (root / "config.json").write_text(json.dumps({"run_config": {}}))
    return root


@pytest.mark.parametrize("case", ["missing-data-file", "config-error", "missing-run-config", "bad-argument"])
def test_feddqc_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    missing = tmp_path / "no-such-rows.jsonl"
    run, bare = _run_dir(tmp_path / "run"), _run_dir(tmp_path / "bare", config=False)
    args, expected = {
        "missing-data-file": (["data", "inspect", "--dataset", str(missing)],
                              f"feddqc: error: data file {missing}: not found (or not a file)"),
        "config-error": (["eval", str(run), "--metrics", "bogus"],
                         "feddqc: error: run config 'eval-metrics' = 'bogus': allowed values are loss, "),
        "missing-run-config": (["eval", str(bare)], f"feddqc: error: {bare / 'config.json'} not found: give a run "),
        "bad-argument": (["data", "inspect", "--num-partitions", "two"],
                         "feddqc data inspect: error: argument --num-partitions: invalid int value: 'two'"),
    }[case]
    proc = _feddqc(*args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-3000:]


def test_feddqc_start_drops_library_import_noise_but_not_own_warnings(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning"}  # as in Flower's simulation processes
    # Without the app's filters, importing peft (which imports bitsandbytes) prints the noise here.
    bare = subprocess.run([sys.executable, "-c", "import peft"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    noise = [line for line in (BNB_NOTICE, JIT_WARNING) if line in bare.stderr]
    assert JIT_WARNING in noise, bare.stderr  # the BNB notice needs an AVX512-BF16 CPU
    rows = tmp_path / "rows.jsonl"
    rows.write_text(DEMO_PATH.read_text().rstrip("\n") + "\n{not json\n")  # one undecodable row: the app warns
    proc = _feddqc("data", "inspect", "--dataset", str(rows), "--num-partitions", "1", "--examples", "0", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in noise if line in proc.stderr] == []
    assert "WARNING feddqc_flwr.data.schema: rows: skipped 1 row(s): bad_json" in proc.stderr
