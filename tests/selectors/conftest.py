"""The scorer tests' tiny-model fixtures (seeded LoRA, one torch thread), reused here."""

from tests.scoring.conftest import bundle, one_torch_thread

__all__ = ["bundle", "one_torch_thread"]
