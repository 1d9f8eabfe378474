"""Distillation methods: one module per method, each reading like its paper's equations."""
