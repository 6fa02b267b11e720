"""A real SuperLink and two SuperNodes on 127.0.0.1: insecure, TLS + node auth, and faults.

Each test starts its own processes (free ports, its own FLWR_HOME) and kills them all at the
end, also on failure. Each takes about 1-3 minutes on 2 CPU cores: every message starts a fresh
ClientApp process that reloads torch and the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.deployment.harness import Deployment, make_certificates, make_node_key, tools_available

RUN_TIMEOUT = 300


def _overrides(tmp_path: Path, tiny_model_dir: Path, rounds: int = 2, **extra: object) -> Path:
    """A short FedDQC job on the demo data with the tiny model."""
    values: dict[str, object] = {
        "model": str(tiny_model_dir), "dataset": "demo", "num-server-rounds": rounds, "hierarchies": 1,
        "local-steps": 1, "batch-size": 2, "max-length": 96, "max-samples": 0, "max-response-words": 0,
        "eval-samples": 2, "lora-r": 4, "lora-alpha": 8, "retention": 0.6, "lr-max": 0.05,
        "fraction-evaluate": 0.0, "round-timeout": 120, "output-dir": str(tmp_path / "outputs"), **extra,
    }
    path = tmp_path / f"run-{time.monotonic_ns()}.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def _wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout}s for {what}")


def _only_run(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "outputs").glob("*-feddqc-fedavg-seed0"))
    assert len(runs) == 1, runs
    return runs[0]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_finished(run: Path, tiny_model_dir: Path, rounds: int) -> list[dict]:
    """Metrics for every round, two clients in each, and a trained, loadable PEFT adapter."""
    lines = _metrics(run)
    assert [x["server_round"] for x in lines] == list(range(rounds + 1))
    assert all(x["aggregated"] and len(x["clients"]) == 2 for x in lines[1:])
    assert lines[1]["threshold"] is not None and lines[1]["scoring"]["clients"] == 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapters/final")
    assert any(torch.count_nonzero(p) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    assert json.loads((run / "adapters/last/state.json").read_text())["completed_round"] == rounds
    return lines


def _run_log(dep: Deployment, proc) -> str:
    return proc.stdout + proc.stderr + dep.log("superlink")


def test_insecure_superlink_and_two_supernodes(tmp_path: Path, tiny_model_dir: Path) -> None:
    with Deployment(tmp_path) as dep:
        dep.start_superlink()
        dep.start_supernode(0, 2)
        dep.start_supernode(1, 2)
        proc = dep.run(_overrides(tmp_path, tiny_model_dir), timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, _run_log(dep, proc)[-4000:]
    lines = _assert_finished(_only_run(tmp_path), tiny_model_dir, rounds=2)
    partitions = {c["pool"] for c in lines[1]["clients"]}
    assert sum(partitions) > 0 and "adapter (PEFT):" in proc.stdout


@pytest.mark.skipif(tools_available() is not None, reason=str(tools_available()))
def test_tls_with_node_authentication_and_unregistered_node_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    keys = [make_node_key(tmp_path / "keys", name) for name in ("node-0", "node-1", "stranger")]
    with Deployment(tmp_path, certs=certs, auth=True) as dep:
        dep.start_superlink()
        for key in keys[:2]:
            dep.register(key.with_suffix(".pub"))
        stranger = dep.start_supernode(0, 2, key=keys[2], name="stranger")
        assert stranger.wait(timeout=60) != 0  # refused: its public key was never registered
        assert "Failed to activate" in dep.log("stranger") or "PERMISSION_DENIED" in dep.log("stranger").upper()
        dep.start_supernode(0, 2, key=keys[0])
        dep.start_supernode(1, 2, key=keys[1])
        listed = dep.flwr("supernode", "list", "dep", "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        proc = dep.run(_overrides(tmp_path, tiny_model_dir, rounds=1), timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, _run_log(dep, proc)[-4000:]
        assert "Starting insecure" not in dep.log("superlink")
    _assert_finished(_only_run(tmp_path), tiny_model_dir, rounds=1)


def test_killed_supernode_round_proceeds_and_restarted_node_rejoins(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Node 1 dies in round 1's training: the round aggregates node 0 alone, node 1 comes back."""
    # round-timeout bounds the wait for the dead node, which the SuperLink lists as connected until
    # its heartbeats are overdue (about a minute); 45 s leaves 2 CPU cores time for the live node.
    overrides = _overrides(tmp_path, tiny_model_dir, rounds=2, **{"round-timeout": 45, "min-train-nodes": 1,
                                                                  "min-train-replies": 1})
    with Deployment(tmp_path) as dep:
        dep.start_superlink()
        dep.start_supernode(0, 2)
        dep.start_supernode(1, 2)
        run = dep.start_run(overrides)
        _wait_until(lambda: "Receiving: train message" in dep.log("supernode-1"), 180, "node 1's first train")
        dep.stop("supernode-1")  # SIGKILL the node and its ClientApp mid-training
        dep.start_supernode(1, 2, name="supernode-1-restarted")
        assert run.wait(timeout=RUN_TIMEOUT) == 0, dep.log("flwr-run")[-4000:]
        log = dep.log("flwr-run")
    lines = _metrics(_only_run(tmp_path))
    first = lines[1]
    assert first["aggregated"] and len(first["clients"]) == 1  # proceeded with the reply that came
    assert first["failures"] + first["missing"] >= 1
    assert "sent no reply within round-timeout" in log or "failed:" in log
    assert lines[-1]["server_round"] == 2 and all(x["aggregated"] for x in lines[1:])
    rejoined = [c for x in lines[2:] for c in x["clients"] if c["node"] not in {k["node"] for k in first["clients"]}]
    assert rejoined, "the restarted node never replied"
    # It lost context.state with its process, but read its progress back from its node-local file:
    # the stage's scores (and part) from before the kill, so it trained without re-scoring.
    assert rejoined[0]["score-seconds"] == 0 and rejoined[0]["stage-train"] > 0


def test_server_restart_resumes_from_last_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The SuperLink (with its ServerApp) dies after round 1 of 2; a new run does round 2 only."""
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    with Deployment(first_out) as dep:
        dep.start_superlink()
        dep.start_supernode(0, 2)
        dep.start_supernode(1, 2)
        dep.start_run(_overrides(first_out, tiny_model_dir, rounds=2))
        _wait_until(lambda: any((first_out / "outputs").glob("*/adapters/last/state.json")), 240,
                    "the first checkpoint")
        dep.stop("superlink")
    crashed = _only_run(first_out)
    state = json.loads((crashed / "adapters/last/state.json").read_text())
    done = state["completed_round"]
    assert done == 1 and set(state["thresholds"]) == {"ira-sum", "loss"}
    with Deployment(second_out) as dep:
        dep.start_superlink()
        dep.start_supernode(0, 2)
        dep.start_supernode(1, 2)
        proc = dep.run(_overrides(second_out, tiny_model_dir, rounds=2, **{"resume-from": str(crashed)}),
                       timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, _run_log(dep, proc)[-4000:]
    resumed = _only_run(second_out)
    lines = _metrics(resumed)
    assert [x["server_round"] for x in lines] == [1, 2]
    assert lines[0]["resumed_from"] == str(crashed)
    before = {x["server_round"]: x for x in _metrics(crashed)}[done]
    # Same adapter as the checkpoint: the same held-out loss before the first resumed round.
    assert lines[0]["server_eval"]["test-loss"] == pytest.approx(before["server_eval"]["test-loss"], rel=1e-5)
    assert all(x["thresholds"] == pytest.approx(state["thresholds"]) for x in lines[1:])  # every lambda kept
    assert json.loads((resumed / "summary.json").read_text())["resumed_from"] == str(crashed)
