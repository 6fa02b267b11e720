"""The model layer: base model + LoRA, prompts and encoding, precision, batching, completions, encoders."""
