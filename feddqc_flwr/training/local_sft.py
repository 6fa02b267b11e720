"""Local supervised fine-tuning of the LoRA adapter for a fixed number of steps.

Uses the transformers Trainer with a fresh optimizer each round (as OpenFedLLM and FlowerTune
do), a constant learning rate set by the server for the round, and completion-only loss:
prompt tokens carry label -100, so only the response (and EOS) is learned. Every optimizer
step sees `batch_size` x `grad_accum` rows (`round_order`), however few rows a hierarchy's stage
holds. FedProx adds its proximal term to the loss here, because Flower's FedProx only sends
`proximal-mu`; the round reports the data loss and the penalty apart.

Precision follows the base model's dtype (`dtype`; `auto` = bf16 where the GPU or CPU has it
natively): a bf16 or fp16 base trains under the Trainer's mixed precision, with autocast applied
inside `compute_loss` (which calls the decoder and head itself, so accelerate's forward wrapper
never runs), while the LoRA weights, the optimizer state and the loss stay float32.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import SequentialSampler
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

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
    """Mean data loss and mean FedProx penalty per optimizer step (NaN/inf: the update is unusable).

    The penalty is kept out of `loss` so that train losses compare across strategies and mu.
    """

    loss: float
    steps: int
    prox: float = 0.0
    step_losses: tuple[float, ...] = ()  # data loss of each optimizer step
    micro_batches: int = 0  # forward+backward passes: steps x grad-accum when accumulation happened
    rows: int = 0  # rows those passes trained on (repeats counted)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.prox)


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
    The loss is scaled for gradient accumulation here (`loss_is_scaled_for_ga`), so that one
    optimizer step sees the penalty once: the Trainer does not divide a loss normalised by
    `num_items_in_batch`, and a penalty added whole to every micro-batch grew with grad-accum.
    Single-process training only (no cross-device token averaging).
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, proximal_mu: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proximal_mu = proximal_mu
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self._data_by_step: dict[int, torch.Tensor] = {}  # summed over micro-batches: per-step values add up
        self._prox_total: torch.Tensor | float = 0.0
        self.micro_batches = 0  # what the Trainer really ran, for the round's metrics
        self.rows = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        with self.accelerator.autocast():  # bf16/fp16 matrix products under mixed precision; NLL in fp32
            nll, _ = position_nll(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        # Micro-batches of one optimizer step: the step's loss is the sum of what they return.
        micro = getattr(self, "current_gradient_accumulation_steps", 1)
        # As HF's causal-LM loss: a sum over the accumulated batch's labelled tokens when the Trainer
        # counts them, else the mean of per-micro-batch means.
        loss = nll.mean() / micro if num_items_in_batch is None else nll.sum() / num_items_in_batch
        prox = loss.new_zeros(())
        if self.proximal_mu > 0:
            distance = sum(((p - self.anchor[n]) ** 2).sum()
                           for n, p in model.named_parameters() if n in self.anchor)
            prox = 0.5 * self.proximal_mu * distance / micro
        if model.training:
            self.micro_batches += 1
            self.rows += int(inputs["input_ids"].shape[0])
            step = self.state.global_step
            self._data_by_step[step] = self._data_by_step.get(step, 0.0) + loss.detach().float()
            self._prox_total = self._prox_total + prox.detach().float()
        loss = loss + prox
        return (loss, None) if return_outputs else loss

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> SequentialSampler:
        """The rows in the order `round_order` laid out (already shuffled): step k trains rows k·n..(k+1)·n-1
        for n = batch x accumulation, so a round's first steps do not depend on how many follow."""
        return SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)

    def step_losses(self) -> list[float]:
        """The data loss of each optimizer step taken."""
        return [float(self._data_by_step[s]) for s in sorted(self._data_by_step)]

    def mean_losses(self) -> tuple[float, float]:
        """Data loss and proximal penalty, each averaged over the optimizer steps taken."""
        steps = max(1, self.state.global_step)
        return sum(self.step_losses()) / steps, float(self._prox_total) / steps


def encode_for_training(rows: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase,
                        template: str, max_length: int) -> Dataset:
    """Rows -> token ids with the prompt masked out of the labels."""
    start = start_token_id(tokenizer)
    encoded = [encode_pair(row, tokenizer, template, max_length).conditioned(start) for row in rows]
    return Dataset.from_dict({"input_ids": [e[0] for e in encoded], "labels": [e[1] for e in encoded]})


def round_order(num_rows: int, count: int, seed: int) -> list[int]:
    """`count` row indices for one round: a seeded permutation of the rows, repeated and cut to length.

    The Trainer accumulates gradients within an epoch only: fed the stage's rows as they are, an
    epoch of fewer than `batch_size` x `grad_accum` rows ends every optimizer step early (one
    micro-batch per step when the stage holds a batch or less), and an uneven epoch shortens its
    last step. One epoch of exactly `steps` x `batch_size` x `grad_accum` rows, taken in this order
    (`ProximalTrainer` samples sequentially), gives every step its full batch; each row is used as
    often as any other, give or take one, and no row twice in a step while the stage has enough.
    """
    permutation = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    return permutation.repeat(-(-count // num_rows))[:count].tolist()


def training_dtype(model: torch.nn.Module) -> torch.dtype:
    """The precision of the base model's matrix products: its load dtype (for 8/4-bit, the compute
    dtype it was loaded with; `prepare_model_for_kbit_training` upcasts the other weights to fp32).

    fp16 on a CPU falls back to float32 (no fp16 autocast there). `dtype = "auto"` loads bf16 only
    where it is native, so a bf16 base on a CPU that emulates it was asked for by name.
    """
    config = getattr(model, "config", None)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = next(model.parameters()).device
    if dtype == torch.bfloat16:
        return dtype
    if dtype == torch.float16 and device.type == "cuda":
        return dtype
    return torch.float32


def train_adapter(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                  rows: Sequence[Mapping[str, Any]], cfg: LocalTrainConfig) -> LocalTrainResult:
    """Run `cfg.steps` optimizer steps of `cfg.batch_size` x `cfg.grad_accum` rows each on `rows`
    (cycled, shuffled by `cfg.seed`)."""
    order = round_order(len(rows), cfg.steps * cfg.batch_size * cfg.grad_accum, cfg.seed)
    dataset = encode_for_training(rows, tokenizer, cfg.template, cfg.max_length).select(order)
    use_cuda = torch.cuda.is_available()
    dtype = training_dtype(model)
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
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
            use_cpu=not use_cuda,
            bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16,
        )
        trainer = ProximalTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=CompletionCollator(int(tokenizer.pad_token_id)),
            proximal_mu=cfg.proximal_mu,
        )
        trainer.remove_callback(PrinterCallback)  # per-step dicts: the round's metrics report the losses
        output = trainer.train()
    # Not `output.training_loss`: it includes the penalty and silently skips NaN/inf steps.
    loss, prox = trainer.mean_losses()
    return LocalTrainResult(loss=loss, steps=int(output.global_step), prox=prox,
                            step_losses=tuple(trainer.step_losses()), micro_batches=trainer.micro_batches,
                            rows=trainer.rows)
