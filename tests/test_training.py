"""Local training: completion-only loss, FedProx's proximal term, and real learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from feddqc_flwr.model import ModelSpec, adapter_arrays, load_model_bundle, set_adapter_arrays
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.training import (
    CompletionCollator,
    LocalTrainConfig,
    ProximalTrainer,
    encode_for_training,
    train_adapter,
)

ROWS = [{"instruction": f"Repeat the number {i}.", "input": "", "response": f"{i} {i} {i}", "history": []}
        for i in range(8)]


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path):
    return load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))


def test_prompt_tokens_carry_no_loss(bundle) -> None:
    encoded = encode_for_training(ROWS[:1], bundle.tokenizer, "alpaca", 128)
    ids, labels = encoded[0]["input_ids"], encoded[0]["labels"]
    response = bundle.tokenizer(ROWS[0]["response"], add_special_tokens=False).input_ids
    learned = [t for t in labels if t != -100]
    assert learned == response + [bundle.tokenizer.eos_token_id]
    assert ids[-len(learned):] == learned


def test_training_lowers_the_loss_on_its_data(bundle) -> None:
    initial = adapter_arrays(bundle.model)
    kwargs = {"template": "alpaca", "max_length": 64, "batch_size": 8, "device": bundle.device}
    before = ira_scores(bundle.model, bundle.tokenizer, ROWS, **kwargs).loss_conditioned.mean()
    result = train_adapter(bundle.model, bundle.tokenizer, ROWS, LocalTrainConfig(
        steps=8, batch_size=4, grad_accum=1, learning_rate=5e-2, max_length=64, template="alpaca",
        proximal_mu=0.0, seed=0))
    after = ira_scores(bundle.model, bundle.tokenizer, ROWS, **kwargs).loss_conditioned.mean()
    assert result.steps == 8 and result.finite
    assert after < before - 0.1
    set_adapter_arrays(bundle.model, initial)
    restored = ira_scores(bundle.model, bundle.tokenizer, ROWS, **kwargs).loss_conditioned.mean()
    assert restored == pytest.approx(before, rel=1e-6)


def test_proximal_term_is_mu_half_squared_distance(bundle, tmp_path: Path) -> None:
    from transformers import TrainingArguments

    dataset = encode_for_training(ROWS[:2], bundle.tokenizer, "alpaca", 64)
    collator = CompletionCollator(bundle.tokenizer.pad_token_id)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    prox, plain = (ProximalTrainer(model=bundle.model, args=args, train_dataset=dataset,
                                   data_collator=collator, proximal_mu=mu) for mu in (0.5, 0.0))
    batch = collator([dataset[0], dataset[1]])
    lora = next(p for n, p in bundle.model.named_parameters() if p.requires_grad)
    bundle.model.eval()  # no LoRA dropout: both losses see the same network
    with torch.no_grad():
        lora.add_(1.0)  # every entry of one LoRA matrix moves 1 away from the global weights
        difference = prox.compute_loss(bundle.model, batch).item() - plain.compute_loss(bundle.model, batch).item()
        lora.sub_(1.0)
    assert difference == pytest.approx(0.5 * 0.5 * lora.numel(), rel=1e-4)
