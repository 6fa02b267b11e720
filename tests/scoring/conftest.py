"""Fixtures for the scorer tests: the tiny Llama with a seeded, non-zero LoRA adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from feddqc_flwr.llm.model import ModelBundle, ModelSpec, load_model_bundle


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Matrices 32 wide gain nothing from threads, and on a busy 2-core machine the second
    OpenMP thread spins: one thread made these tests 30x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path) -> ModelBundle:
    """Every LoRA matrix set from a fixed seed, so lora_A gradients are non-zero too."""
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bundle.model.eval()
    return bundle


@pytest.fixture(scope="module")
def copy_model(tiny_model_dir: Path) -> ModelBundle:
    """A one-layer Llama that raises the logit of every token already in its context (see
    test_swap_detection.py): a response copied from the prompt is likely only after the prompt."""
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
