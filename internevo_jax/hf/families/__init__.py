"""One module per Hugging Face layout; each defines `MAPPING`, an `HFMapping` (see hf/registry.py)."""
