"""Local training: completion-only loss, FedProx's proximal term, and real learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from feddqc_flwr.llm.model import ModelSpec, adapter_arrays, load_model_bundle, set_adapter_arrays
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.training.local_sft import (
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


@pytest.mark.parametrize("num_items", [None, 7])
def test_labelled_positions_loss_and_gradients_equal_full_logits(bundle, tmp_path: Path, num_items) -> None:
    """The head-at-labels loss is HF's full-logits loss (+ FedProx), value and gradients."""
    from transformers import TrainingArguments

    dataset = encode_for_training(ROWS[:3], bundle.tokenizer, "alpaca", 64)
    collator = CompletionCollator(bundle.tokenizer.pad_token_id)
    batch = collator([dataset[i] for i in range(3)])  # different lengths: right padding is exercised
    initial = adapter_arrays(bundle.model)
    mu = 0.3
    trainer = ProximalTrainer(model=bundle.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                              use_cpu=True), train_dataset=dataset, data_collator=collator, proximal_mu=mu)
    lora = [(n, p) for n, p in bundle.model.named_parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-zero LoRA (B = 0 at init) that is also away from FedProx's anchor
        for _, p in lora:
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    bundle.model.eval()  # no LoRA dropout: both losses see the same network

    def loss_and_grads(compute) -> tuple[float, dict[str, torch.Tensor]]:
        bundle.model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in lora}

    def full_logits():
        kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
        prox = sum(((p - trainer.anchor[n]) ** 2).sum() for n, p in lora)
        return bundle.model(**batch, **kwargs).loss + 0.5 * mu * prox

    expected, expected_grads = loss_and_grads(full_logits)
    head_rows: list[int] = []
    hook = bundle.model.get_output_embeddings().register_forward_hook(
        lambda _module, args, _out: head_rows.append(args[0].shape[0]))
    got, got_grads = loss_and_grads(lambda: trainer.compute_loss(bundle.model, batch, num_items_in_batch=num_items))
    hook.remove()
    bundle.model.zero_grad()
    set_adapter_arrays(bundle.model, initial)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert sum(head_rows) == labelled < batch["labels"].numel() / 2  # the head saw only labelled positions
    assert got == pytest.approx(expected, rel=1e-5)
    assert any(g.abs().sum() > 0 for g in expected_grads.values())
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-7)
