"""kdx: knowledge-distillation research framework (Hydra + Lightning + Hugging Face)."""

__version__ = "0.1.0"
