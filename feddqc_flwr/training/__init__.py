"""Local training of the LoRA adapter and the per-sample training dynamics (data map)."""
