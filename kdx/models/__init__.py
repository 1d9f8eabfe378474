"""Model builders: Hugging Face checkpoints, config-built tiny BERTs, student initialisation."""
