"""bundler: reproducible, auditable LoRA fine-tuning bundles."""

__version__ = "0.1.0"
