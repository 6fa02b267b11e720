"""Known console noise, silenced unless `console = "verbose"`: notices a user cannot act on, never
a warning about this run. Flower's built-in strategies log every aggregated metric dict at INFO
(the console's round lines say it shorter), peft reads a transformers property that warns it is
deprecated, Ray prints a tip at start, and transformers draws a progress bar per model load."""

from __future__ import annotations

import functools
import logging
import os
import warnings

# (category, start of the message) of warnings raised by libraries, not by anything in the run config
KNOWN_WARNINGS = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # peft's get_peft_model, transformers 5
    (FutureWarning, r"Tip: In future versions of Ray"),  # ray.init in Flower's simulation engine
)
FLOWER_STRATEGIES = os.path.join("flwr", "serverapp", "strategy", "")


class FlowerStrategyChatter(logging.Filter):
    """Drops INFO records of Flower's built-in strategies (metric dicts, sampling notes); keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or FLOWER_STRATEGIES not in record.pathname


@functools.cache
def quiet_known_noise() -> None:
    """Install the filters once per process (Flower starts fresh processes per run)."""
    import transformers  # here, so that importing the ClientApp stays light

    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("flwr").addFilter(FlowerStrategyChatter())


def apply_console_mode(mode: str) -> None:
    """`console = "progress"` (default) silences the known noise; "verbose" leaves everything on."""
    if mode == "progress":
        quiet_known_noise()
