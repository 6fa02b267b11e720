"""Local supervised fine-tuning of the LoRA adapter for a fixed number of steps.

Uses the transformers Trainer with a fresh optimizer each round (as OpenFedLLM and FlowerTune
do), a constant learning rate set by the server for the round, and completion-only loss:
prompt tokens carry label -100, so only the response (and EOS) is learned. FedProx adds its
proximal term to the loss here, because Flower's FedProx only sends `proximal-mu`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from feddqc_flwr.llm.batching import pad_sequences
from feddqc_flwr.llm.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.nll import position_nll


@dataclass(frozen=True)
class LocalTrainConfig:
    """One round of local training, as the server configured it."""

    steps: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    max_length: int
    template: str
    proximal_mu: float
    seed: int


@dataclass(frozen=True)
class LocalTrainResult:
    """Mean training loss over the round's steps (NaN/inf means the update is unusable)."""

    loss: float
    steps: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


class CompletionCollator:
    """Right-pads input ids, labels (with -100) and the attention mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids, attention, labels = pad_sequences([(f["input_ids"], f["labels"]) for f in features], self.pad_id)
        return {"input_ids": ids, "labels": labels, "attention_mask": attention}


class ProximalTrainer(Trainer):
    """Trainer whose loss adds (mu/2)·||w - w_global||² over the trainable (LoRA) weights.

    The causal-LM loss is HF's (token cross-entropy over labelled positions, shifted), but the
    LM head runs only at positions with a label (`position_nll`, shared with scoring): the
    full-vocabulary logits of prompt and padding tokens were most of a step's peak memory.
    Single-process training only (no cross-device token averaging).
    """

    def __init__(self, *args: Any, proximal_mu: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proximal_mu = proximal_mu
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        nll, _ = position_nll(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        # As HF's causal-LM loss: a sum over the accumulated batch's labelled tokens when the Trainer
        # counts them (it then skips its own gradient-accumulation division), else a per-batch mean.
        loss = nll.mean() if num_items_in_batch is None else nll.sum() / num_items_in_batch
        if self.proximal_mu > 0:
            prox = sum(((p - self.anchor[n]) ** 2).sum()
                       for n, p in model.named_parameters() if n in self.anchor)
            loss = loss + 0.5 * self.proximal_mu * prox
        return (loss, None) if return_outputs else loss


def encode_for_training(rows: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase,
                        template: str, max_length: int) -> Dataset:
    """Rows -> token ids with the prompt masked out of the labels."""
    start = start_token_id(tokenizer)
    encoded = [encode_pair(row, tokenizer, template, max_length).conditioned(start) for row in rows]
    return Dataset.from_dict({"input_ids": [e[0] for e in encoded], "labels": [e[1] for e in encoded]})


def train_adapter(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                  rows: Sequence[Mapping[str, Any]], cfg: LocalTrainConfig) -> LocalTrainResult:
    """Run `cfg.steps` optimizer steps on `rows` (cycled, shuffled by `cfg.seed`)."""
    dataset = encode_for_training(rows, tokenizer, cfg.template, cfg.max_length)
    use_cuda = torch.cuda.is_available()
    dtype = next(model.parameters()).dtype
    with tempfile.TemporaryDirectory(prefix="feddqc-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=cfg.steps,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=cfg.seed,
            data_seed=cfg.seed,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
            use_cpu=not use_cuda,
            bf16=use_cuda and dtype == torch.bfloat16,
            fp16=use_cuda and dtype == torch.float16,
        )
        trainer = ProximalTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=CompletionCollator(int(tokenizer.pad_token_id)),
            proximal_mu=cfg.proximal_mu,
        )
        output = trainer.train()
    return LocalTrainResult(loss=float(output.training_loss), steps=int(output.global_step))
