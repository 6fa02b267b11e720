"""The resident executor (`RESIDENT=1 scripts/deploy/supernode.sh`) on a real SuperLink and 2 SuperNodes.

It runs on Flower internals, so these tests are also the upgrade check: a flwr release that
changes them fails here (or is refused by the version check) instead of in someone's federation.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from feddqc_flwr.executor import cli, versions
from feddqc_flwr.executor.supervisor import EXIT_REFUSED
from tests.deployment.harness import Deployment
from tests.deployment.test_deployment import RUN_TIMEOUT, _assert_finished, _metrics, _only_run, _overrides, _wait_until

COMPARED = ("train-loss", "score-q50", "pool", "kept", "stage-train", "num-examples")


def _run(dep: Deployment, out: Path, tiny_model_dir: Path, **extra: object) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    proc = dep.run(_overrides(out, tiny_model_dir, rounds=1, **extra), timeout=2 * RUN_TIMEOUT)
    assert proc.returncode == 0 and "FedDQC run finished" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    return _assert_finished(_only_run(out), tiny_model_dir, rounds=1)


def _by_partition(line: dict) -> list[dict]:
    return sorted(line["clients"], key=lambda c: (c["pool"], c["train-loss"]))


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(_only_run(out) / "adapters/final/adapter_model.safetensors")


def test_resident_executor_matches_stock_and_keeps_the_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Same metrics and adapter as stock Flower; the model is loaded once per node, across runs."""
    with Deployment(tmp_path / "stock") as dep:
        dep.start_superlink()
        dep.start_supernode(0, 2)
        dep.start_supernode(1, 2)
        stock = _run(dep, tmp_path / "stock", tiny_model_dir)
    with Deployment(tmp_path / "resident") as dep:
        dep.start_superlink()
        dep.start_resident_supernode(0, 2)
        dep.start_resident_supernode(1, 2)
        first = _run(dep, tmp_path / "first", tiny_model_dir)
        second = _run(dep, tmp_path / "second", tiny_model_dir)
    # Stock Flower: a fresh process per message loads the model every time and never reuses it.
    assert all(c["model-loads"] == 1 and c["model-reuses"] == 0 for c in stock[1]["clients"])
    for ours, theirs in zip(_by_partition(first[1]), _by_partition(stock[1]), strict=True):
        assert {k: ours[k] for k in COMPARED} == pytest.approx({k: theirs[k] for k in COMPARED}, rel=1e-5)
    assert first[1]["threshold"] == pytest.approx(stock[1]["threshold"], rel=1e-6)
    assert first[1]["server_eval"]["test-loss"] == pytest.approx(stock[1]["server_eval"]["test-loss"], rel=1e-5)
    ours, theirs = _adapter(tmp_path / "first"), _adapter(tmp_path / "stock")
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)
    # Resident: one load per node; every later message (score, train, the next run's) reuses it.
    reuses = {}
    for run in (first, second):
        for c in run[1]["clients"]:
            assert c["model-loads"] == 1, c
            assert c["model-reuses"] > reuses.get(c["node"], 0), c
            reuses[c["node"]] = c["model-reuses"]


def _executor_child(supernode: psutil.Process) -> psutil.Process:
    """The supervised executor process (not its restart loop) under a node's supernode.sh."""
    found = [p for p in supernode.children(recursive=True)  # not feddqc_flwr.executor.fast_supernode
             if "feddqc_flwr.executor" in p.cmdline() and "--restart" not in p.cmdline()]
    assert len(found) == 1, found
    return found[0]


def test_killed_executor_restarts_and_run_completes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """SIGKILL of node 1's executor mid-training: its task ends in an error reply, the restart loop
    brings a new executor, which serves node 1 in round 2 (loading the model once more)."""
    # Without heartbeats the SuperNode ends the killed task after <= 60 s; the round waits for that.
    # 300 local steps keep the tiny model training for seconds, so the kill lands mid-task (with 1
    # step the reply could be out before the log line was seen, and round 1 then had 2 replies).
    overrides = _overrides(tmp_path, tiny_model_dir, rounds=2,
                           **{"round-timeout": 150, "min-train-replies": 1, "local-steps": 300})
    with Deployment(tmp_path) as dep:
        dep.start_superlink()
        dep.start_resident_supernode(0, 2)
        node = psutil.Process(dep.start_resident_supernode(1, 2).pid)
        run = dep.start_run(overrides)
        _wait_until(lambda: ", train message" in dep.log("supernode-1"), 2 * RUN_TIMEOUT,
                    "node 1's executor to start training", poll=0.05)
        killed = _executor_child(node)
        os.kill(killed.pid, signal.SIGKILL)
        assert run.wait(timeout=2 * RUN_TIMEOUT) == 0, dep.log("flwr-run")[-4000:]
        assert "restarting in" in dep.log("supernode-1")
        assert _executor_child(node).pid != killed.pid
    lines = _metrics(_only_run(tmp_path))
    assert lines[1]["aggregated"] and len(lines[1]["clients"]) == 1
    assert lines[1]["failures"] + lines[1]["missing"] == 1
    assert lines[2]["aggregated"] and len(lines[2]["clients"]) == 2
    back = [c for c in lines[2]["clients"] if c["node"] != lines[1]["clients"][0]["node"]]
    assert back[0]["model-loads"] == 1 and back[0]["model-reuses"] == 0  # a fresh executor, its first message


def test_installed_flwr_is_supported() -> None:
    """Fails when flwr is upgraded past the releases the executor was checked against."""
    installed = importlib.metadata.version("flwr")
    assert installed in versions.SUPPORTED_FLWR
    assert versions.check_flwr() == installed


def test_unsupported_flwr_is_refused_with_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(versions, "installed_flwr", lambda: "1.43.0")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--insecure"])
    assert exit_info.value.code == EXIT_REFUSED  # the restart loop does not retry this
    message = capsys.readouterr().err
    assert "flwr 1.43.0 is installed" in message and "1.41.0" in message and "without the resident" in message


def test_plain_http_only_to_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.is_loopback("127.0.0.1:9094") and cli.is_loopback("[::1]:9094") and cli.is_loopback("localhost:1")
    assert not cli.is_loopback("10.0.0.5:9094") and not cli.is_loopback("supernode-1:9094")
    with pytest.raises(SystemExit):
        cli.main(["--insecure", "--runtime-api-address", "10.0.0.5:9094"])
    assert "only allowed to a loopback address" in capsys.readouterr().err


class _FakeHeartbeat:
    def __init__(self, fn: object) -> None:
        self.is_running = False

    def start(self) -> None:
        self.is_running = True

    def stop(self) -> None:
        self.is_running = False


def _one_task(monkeypatch: pytest.MonkeyPatch, app_fn, push_message=None) -> dict[str, object]:
    """Run `run_task` once on a fake Runtime API: `app_fn` is the ClientApp; what was pushed comes back."""
    from flwr.app import Context, Message, Metadata, RecordDict

    from feddqc_flwr.executor import resident

    metadata = Metadata(run_id=1, message_id="m-1", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    message = Message(content=RecordDict(), metadata=metadata)
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    pushed: dict[str, object] = {}

    class Apps:
        def client_app(self, run: object, fab: object):
            return app_fn

    class Client:
        def close(self) -> None:
            pushed["closed"] = True

    monkeypatch.setattr(resident.RuntimeApi, "client", lambda self, interceptors, max_time: Client())
    monkeypatch.setattr(resident, "HeartbeatSender", _FakeHeartbeat)
    monkeypatch.setattr(resident, "pull_task_input", lambda client: (message, context, type("R", (), {"run_id": 1})(),
                                                                      None))
    monkeypatch.setattr(resident, "push_message",
                        push_message or (lambda client, reply, ctx: pushed.update(reply=reply)))
    monkeypatch.setattr(resident, "push_task_output",
                        lambda client, context, sub_status, details: pushed.update(status=sub_status, details=details))
    try:
        resident.run_task(resident.RuntimeApi("127.0.0.1:1"), "token", 5, Apps())
    except resident.ExecutorStopped as stopped:
        pushed["stopped"] = stopped
    return pushed


def test_an_exception_in_the_app_becomes_an_error_reply(monkeypatch: pytest.MonkeyPatch,
                                                        client_task_identity: None) -> None:
    """One failing message: an error reply and a FAILED task status, and run_task returns for the next task."""
    from flwr.common.constant import ErrorCode, SubStatus

    def broken(message, context):
        raise ValueError("boom")

    pushed = _one_task(monkeypatch, broken)
    reply = pushed["reply"]
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "boom" in reply.error.reason and reply.metadata.reply_to_message_id == "m-1"
    assert pushed["status"] == SubStatus.FAILED and "boom" in pushed["details"] and pushed["closed"]
    assert "stopped" not in pushed


def test_sigterm_while_pushing_the_reply_ends_the_task_then_stops(monkeypatch: pytest.MonkeyPatch,
                                                                  client_task_identity: None) -> None:
    """The signal handler raises inside push_message: the task still gets its final status, the
    client is closed, and the executor stops instead of logging it as a push failure and going on."""
    from flwr.app import Message, RecordDict
    from flwr.common.constant import SubStatus

    from feddqc_flwr.executor.resident import ExecutorStopped

    def interrupted(client, reply, ctx):
        raise ExecutorStopped("executor stopped by signal 15")

    pushed = _one_task(monkeypatch, lambda message, context: Message(RecordDict(), reply_to=message), interrupted)
    assert pushed["status"] == SubStatus.COMPLETED and pushed["closed"]
    assert "signal 15" in str(pushed["stopped"])


class _StatusClient:
    """A Runtime API whose AcquireTask answers with an HTTP status."""

    def __init__(self, status: int) -> None:
        self.status = status

    def AcquireTask(self, request: object) -> None:  # noqa: N802  # Flower's RPC name
        import httpx

        request = httpx.Request("POST", "http://127.0.0.1:1/AcquireTask")
        raise httpx.HTTPStatusError("refused", request=request, response=httpx.Response(self.status, request=request))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("status", "refused"), [(401, True), (403, True), (500, False), (404, False)])
def test_only_an_auth_refusal_stops_the_executor_for_good(monkeypatch: pytest.MonkeyPatch, status: int,
                                                          refused: bool) -> None:
    """401/403 (wrong secret) -> RuntimeApiRefused (exit 3, not retried); other errors propagate, the
    process exits 1 and the restart loop starts a new executor."""
    import httpx

    from feddqc_flwr.executor import resident

    monkeypatch.setattr(resident.signal, "signal", lambda signum, handler: None)
    monkeypatch.setattr(resident.RuntimeApi, "client", lambda self, interceptors, max_time: _StatusClient(status))
    expected = resident.RuntimeApiRefused if refused else httpx.HTTPStatusError
    with pytest.raises(expected) as raised:
        resident.serve(resident.RuntimeApi("127.0.0.1:1"), poll_interval=0.01)
    assert isinstance(raised.value, resident.RuntimeApiRefused) is refused


def test_a_new_fab_empties_the_old_code_caches_before_dropping_it() -> None:
    """The old app's cached model must not stay referenced while the new code loads its own."""
    import functools
    import sys
    import types

    from feddqc_flwr.executor.apps import _forget_modules

    module = types.ModuleType("oldapp.llm")
    exec("import functools\n@functools.lru_cache\ndef load(x):\n    return [x]\n", vars(module))  # noqa: S102
    sys.modules["oldapp"], sys.modules["oldapp.llm"] = types.ModuleType("oldapp"), module
    load = module.load
    load(1)
    assert load.cache_info().currsize == 1
    _forget_modules("oldapp")
    assert load.cache_info().currsize == 0 and "oldapp.llm" not in sys.modules and "oldapp" not in sys.modules
    assert isinstance(load, functools._lru_cache_wrapper)


def test_preload_imports_what_is_installed_and_names_what_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    sys.modules.pop("colorsys", None)
    assert cli.preload("colorsys, no_such_module_feddqc,") == ["no_such_module_feddqc"]
    assert "colorsys" in sys.modules
    err = capsys.readouterr().err
    assert "preloaded colorsys" in err and "--preload no_such_module_feddqc: not imported" in err
    assert cli.preload("") == []


def test_the_restart_loop_passes_preload_to_its_child() -> None:
    args = cli.build_parser().parse_args(["--insecure", "--preload", "", "--restart"])
    child = cli._child_args(args)
    assert child[child.index("--preload") + 1] == "" and "--restart" not in child
    assert cli.build_parser().parse_args([]).preload == "torch,transformers,peft,datasets"
