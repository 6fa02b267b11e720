"""Quantize once, reuse the saved weights.

bitsandbytes quantizes while `from_pretrained` loads, so every load of an 8/4-bit model reads the
full-precision weights and quantizes them again, and in stock Flower deployment every message is
a fresh process that loads the model. The first quantized load of a model saves the quantized
weights under `cache_root()/quantized/`; later loads read those instead (about a half (8-bit) or a
quarter (4-bit) of the bytes, no quantization step). The folder's name is a digest of everything
the weights depend on: the source weights, the quantization settings, transformers and
bitsandbytes versions; a change to any of them writes a new folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from feddqc_flwr.llm.cache import cache_root, write_folder_once

log = logging.getLogger("flwr").getChild(__name__)

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".json"}


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """The app's bitsandbytes settings: LLM.int8 for 8bit, NF4 with double quantization for 4bit."""
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization {quantization!r}: allowed are '8bit' and '4bit'")
    return BitsAndBytesConfig(load_in_8bit=quantization == "8bit", load_in_4bit=quantization == "4bit",
                              bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def source_identity(path: str) -> str | None:
    """What the source weights are: a local folder's weight and config files (name, size, mtime), a
    hub model's cached snapshot (its commit); None for a hub model that is not downloaded yet."""
    folder = Path(path)
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
        return json.dumps([str(folder.resolve()), *[[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]])
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415  # hub models only

    found = try_to_load_from_cache(path, "config.json")
    return f"{path}@{Path(found).parent.name}" if isinstance(found, str) else None


def _bitsandbytes_version() -> str:
    try:
        return version("bitsandbytes")
    except PackageNotFoundError:
        raise ImportError("8/4-bit quantization needs bitsandbytes: pip install bitsandbytes "
                          "(the app's `gpu` extra), or set quantization = 'none'") from None


def quantized_folder(path: str, quantization: str, compute_dtype: torch.dtype) -> Path | None:
    """Where the quantized copy of `path` lives (or will); None while its source is unknown."""
    identity = source_identity(path)
    if identity is None:
        return None
    key = json.dumps({"source": identity, "config": bnb_config(quantization, compute_dtype).to_dict(),
                      "versions": [version("transformers"), _bitsandbytes_version()]}, sort_keys=True, default=str)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).name or path)[-40:]
    return cache_root() / "quantized" / f"{slug}-{quantization}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def quantize_from_source(path: str, quantization: str, compute_dtype: torch.dtype,
                         **kwargs: Any) -> PreTrainedModel:
    """bitsandbytes' own path: read the full-precision weights and quantize them while loading."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=compute_dtype,
                                                quantization_config=bnb_config(quantization, compute_dtype), **kwargs)


def load_quantized(path: str, quantization: str, compute_dtype: torch.dtype,
                   **kwargs: Any) -> tuple[PreTrainedModel, bool]:
    """The model in 8/4-bit and whether it came from the saved copy. `kwargs` go to `from_pretrained`
    (e.g. `device_map`). The copy is saved before any training preparation touches the weights."""
    folder = quantized_folder(path, quantization, compute_dtype)
    if folder is not None and (folder / "config.json").is_file():
        log.info("Loading %s in %s from its quantized copy %s", path, quantization, folder)
        try:
            return AutoModelForCausalLM.from_pretrained(folder, dtype=compute_dtype, **kwargs), True
        except Exception as err:  # noqa: BLE001  # a damaged copy fails in library-specific ways; the source works
            log.warning("The quantized copy %s does not load (%s): quantizing %s again", folder, err, path)
    model = quantize_from_source(path, quantization, compute_dtype, **kwargs)
    folder = folder or quantized_folder(path, quantization, compute_dtype)  # a hub model is cached now
    if folder is not None and not (folder / "config.json").is_file():
        log.info("Saving %s in %s to %s: later loads skip quantization", path, quantization, folder)
        try:
            write_folder_once(folder, model.save_pretrained)
        except (OSError, ValueError, RuntimeError, NotImplementedError) as err:  # the copy only saves time
            log.warning("Could not save the quantized copy of %s to %s (%s): every load quantizes again",
                        path, folder, err)
    return model, False
