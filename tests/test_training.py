"""Local training: completion-only loss, FedProx's proximal term, and real learning."""

from __future__ import annotations

import math
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
    round_order,
    train_adapter,
)

ROWS = [{"instruction": f"Repeat the number {i}.", "input": "", "response": f"{i} {i} {i}", "history": []}
        for i in range(8)]


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path):
    return load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8, dtype="float32"))


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


def _one_sgd_step(bundle, tmp_path: Path, grad_accum: int, mu: float, shift: float,
                  lr: float) -> tuple[dict[str, torch.Tensor], ProximalTrainer]:
    """One optimizer step of plain SGD over 4 rows, as 4 // grad_accum rows x grad_accum micro-batches.

    FedProx's anchor sits `shift` below every LoRA entry, so (mu/2)·||w - w_g||² has gradient mu·shift.
    Dropout is off so that the two runs compared see the same network.
    """
    from transformers import TrainingArguments

    initial = adapter_arrays(bundle.model)
    dataset = encode_for_training(ROWS[:4], bundle.tokenizer, "alpaca", 64)
    lora = [p for p in bundle.model.parameters() if p.requires_grad]
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=1,
                             per_device_train_batch_size=4 // grad_accum, gradient_accumulation_steps=grad_accum,
                             lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, seed=0,
                             save_strategy="no", disable_tqdm=True, remove_unused_columns=False)
    trainer = ProximalTrainer(model=bundle.model, args=args, train_dataset=dataset,
                              data_collator=CompletionCollator(bundle.tokenizer.pad_token_id), proximal_mu=mu,
                              optimizers=(torch.optim.SGD(lora, lr=lr), None))
    trainer.anchor = {n: p.detach() - shift for n, p in trainer.anchor.items()}
    dropouts = [m for m in bundle.model.modules() if isinstance(m, torch.nn.Dropout)]
    rates = [m.p for m in dropouts]
    for m in dropouts:
        m.p = 0.0
    try:
        trainer.train()
        after = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if p.requires_grad}
    finally:
        for m, rate in zip(dropouts, rates, strict=True):
            m.p = rate
        set_adapter_arrays(bundle.model, initial)
    return after, trainer


def test_proximal_step_does_not_grow_with_grad_accum(bundle, tmp_path: Path) -> None:
    """SGD moves each weight by -lr·mu·shift more with FedProx on, at any gradient accumulation."""
    mu, shift, lr = 0.2, 0.5, 0.1
    plain1, _ = _one_sgd_step(bundle, tmp_path, 1, 0.0, shift, lr)
    for grad_accum in (1, 4):
        prox, trainer = _one_sgd_step(bundle, tmp_path, grad_accum, mu, shift, lr)
        plain, plain_trainer = _one_sgd_step(bundle, tmp_path, grad_accum, 0.0, shift, lr)
        for name in prox:
            torch.testing.assert_close(prox[name] - plain[name], torch.full_like(prox[name], -lr * mu * shift),
                                       rtol=0, atol=1e-6)
            # the data part is the same token-mean whether the 4 rows come as 1 batch or 4 micro-batches
            torch.testing.assert_close(plain[name], plain1[name], rtol=1e-4, atol=1e-6)
        numel = sum(p.numel() for p in trainer.anchor.values())
        data_loss, penalty = trainer.mean_losses()
        assert penalty == pytest.approx(0.5 * mu * shift**2 * numel, rel=1e-5)  # = 0.025·numel, per step
        assert data_loss == pytest.approx(plain_trainer.mean_losses()[0], rel=1e-6)  # penalty left out
        assert plain_trainer.mean_losses()[1] == 0.0


def test_train_loss_leaves_out_the_proximal_term(bundle) -> None:
    """Step 1 starts at the anchor (no penalty); step 2's penalty is (mu/2)·||w1 - w0||², reported apart."""
    initial = adapter_arrays(bundle.model)
    w0 = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if p.requires_grad}

    def run(steps: int, mu: float):
        result = train_adapter(bundle.model, bundle.tokenizer, ROWS[:4], LocalTrainConfig(
            steps=steps, batch_size=2, grad_accum=2, learning_rate=5e-2, max_length=64, template="alpaca",
            proximal_mu=mu, seed=3))
        weights = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if p.requires_grad}
        set_adapter_arrays(bundle.model, initial)
        return result, weights

    mu = 4.0
    _, w1 = run(1, mu)  # the penalty's gradient is zero at the anchor: step 1 is FedAvg's step 1
    with_prox, _ = run(2, mu)
    without, _ = run(2, 0.0)
    distance = sum(float(((w1[n] - w0[n]) ** 2).sum()) for n in w0)
    assert distance > 0
    assert with_prox.prox == pytest.approx((0.0 + 0.5 * mu * distance) / 2, rel=1e-4)
    assert with_prox.loss == pytest.approx(without.loss, rel=1e-6)  # both losses are taken at w0, then w1
    assert without.prox == 0.0


def test_bf16_training_tracks_fp32_and_keeps_lora_and_loss_in_fp32(tiny_model_dir: Path) -> None:
    """A bf16 base trains under mixed precision: finite per-step losses close to fp32's, fp32 LoRA weights."""
    from feddqc_flwr.training.local_sft import training_dtype

    rows = [{"instruction": f"Say the number {i}.", "input": "", "response": f"The number is {i}."} for i in range(8)]
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8,
                                             dtype=str(dtype).removeprefix("torch."), seed=1))
        assert training_dtype(bundle.model) == dtype
        results[dtype] = train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(
            steps=4, batch_size=4, grad_accum=1, learning_rate=1e-3, max_length=64, template="alpaca",
            proximal_mu=0.0, seed=0))
        lora = [p for n, p in bundle.model.named_parameters() if "lora_" in n]
        assert lora and all(p.dtype == torch.float32 for p in lora)
    fp32, bf16 = results[torch.float32], results[torch.bfloat16]
    assert len(bf16.step_losses) == 4 and all(math.isfinite(v) for v in bf16.step_losses)
    assert bf16.loss == pytest.approx(fp32.loss, rel=0.02)
    assert bf16.step_losses == pytest.approx(fp32.step_losses, rel=0.02)


@pytest.mark.parametrize(("rows", "batch_size", "grad_accum", "steps"), [(2, 2, 3, 2), (5, 2, 2, 3)])
def test_every_step_accumulates_full_batches_however_few_rows_the_stage_has(bundle, rows, batch_size, grad_accum,
                                                                           steps) -> None:
    """A stage of 2 rows is less than one step's 2 x 3 (the Trainer alone would run 1 micro-batch per
    step, as its epoch ends there); 5 rows split unevenly into batches of 2 (it would cut the last
    step of each epoch short). Either way each step must see grad_accum micro-batches of batch_size rows."""
    initial = adapter_arrays(bundle.model)
    result = train_adapter(bundle.model, bundle.tokenizer, ROWS[:rows], LocalTrainConfig(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, learning_rate=1e-3, max_length=64,
        template="alpaca", proximal_mu=0.0, seed=0))
    set_adapter_arrays(bundle.model, initial)
    assert result.steps == steps and len(result.step_losses) == steps
    assert result.micro_batches == steps * grad_accum
    assert result.rows == steps * grad_accum * batch_size


def test_round_order_uses_every_row_equally_often_in_a_seeded_order() -> None:
    order = round_order(5, 12, seed=0)
    assert len(order) == 12 and sorted(set(order)) == [0, 1, 2, 3, 4]
    assert sorted(order.count(i) for i in range(5)) == [2, 2, 2, 3, 3]  # two whole passes, then 2 more rows
    assert order[:5] == order[5:10] and sorted(order[:5]) == [0, 1, 2, 3, 4]  # each pass a permutation
    assert round_order(5, 12, seed=0) == order and round_order(5, 12, seed=1) != order
    assert round_order(8, 3, seed=0) == round_order(8, 8, seed=0)[:3]  # more rows than needed: a seeded subset
