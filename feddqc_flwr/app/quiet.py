"""Known console noise, silenced unless `console = "verbose"`: notices a user cannot act on, never
a warning about this run. Flower's built-in strategies log every aggregated metric dict at INFO
(the console's round lines say it shorter), peft calls transformers methods that warn they are
deprecated, bitsandbytes' 8-bit layers announce a cast on every call, Ray prints a tip at start,
and transformers draws a progress bar per model load.

Two notices come while peft imports bitsandbytes, before any run config is read, so `console`
cannot govern them: `quiet_import_noise` drops them in every process, from the package's
`__init__`, before anything imports peft."""

from __future__ import annotations

import functools
import logging
import os
import warnings

# (category, start of the message) of warnings raised by libraries, not by anything in the run config
KNOWN_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # peft's get_peft_model, transformers 5
    (FutureWarning, r"Tip: In future versions of Ray"),  # ray.init in Flower's simulation engine
    # transformers 5 deprecates the name; peft's prepare_model_for_kbit_training and `llm.model` still call it
    (FutureWarning, r"`gradient_checkpointing_enable` is deprecated"),
)
# (logger, start of the message) of library log records: bitsandbytes' 8-bit layers (LLM.int8 quantizes
# fp16 activations) log this on every forward pass
KNOWN_LOG_RECORDS = (("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from"),)
FLOWER_STRATEGIES = os.path.join("flwr", "serverapp", "strategy", "")
# bitsandbytes looks for an optional faster CPU 4-bit kernel on AVX512-BF16 CPUs; runs quantize on CUDA only
IMPORT_NOISE_LOGGER = "bitsandbytes.backends.cpu.ops"
IMPORT_NOISE_LOG = "Failed to load CPU gemm_4bit_forward from kernels-community"
# bitsandbytes' torch.compile imports torch._inductor, which imports torch.utils.mkldnn: torch's own
# module still decorates with the deprecated torch.jit.script_method (shown where DeprecationWarnings
# are on, e.g. in Flower's simulation processes: flwr.simulation.ray_transport.utils turns them on)
IMPORT_NOISE_WARNING = r"`torch\.jit\.script_method` is deprecated"


class FlowerStrategyChatter(logging.Filter):
    """Drops INFO records of Flower's built-in strategies (metric dicts, sampling notes); keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or FLOWER_STRATEGIES not in record.pathname


class DropLibraryNotice(logging.Filter):
    """Drops the records of one logger whose message (unformatted) starts with a known prefix."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@functools.cache
def quiet_import_noise() -> None:
    """Install the import-time filters once per process; cheap (imports nothing)."""
    warnings.filterwarnings("ignore", message=IMPORT_NOISE_WARNING, category=DeprecationWarning,
                            module=r"torch\.jit\._script")
    logging.getLogger(IMPORT_NOISE_LOGGER).addFilter(DropLibraryNotice(IMPORT_NOISE_LOG))


@functools.cache
def quiet_known_noise() -> None:
    """Install the filters once per process (Flower starts fresh processes per run)."""
    import transformers  # here, so that importing the ClientApp stays light

    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for logger, prefix in KNOWN_LOG_RECORDS:
        logging.getLogger(logger).addFilter(DropLibraryNotice(prefix))
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("flwr").addFilter(FlowerStrategyChatter())


def apply_console_mode(mode: str) -> None:
    """`console = "progress"` (default) silences the known noise; "verbose" leaves everything on."""
    if mode == "progress":
        quiet_known_noise()
