"""Hardware options a trial applies to its models: `torch.compile` (hardware.compile)."""

import torch.nn as nn
from omegaconf import DictConfig

from kdx.errors import KdxError


def compile_models(hardware: DictConfig, *models: nn.Module | None) -> None:
    """Compiles each model in place (`nn.Module.compile`: parameter names, and so checkpoints, stay
    as they are) when `hardware.compile` is true or names a torch.compile mode."""
    setting = hardware.get("compile")
    if not setting:
        return
    if setting is not True and not isinstance(setting, str):
        raise KdxError(f"hardware.compile={setting!r} is neither true/false nor a torch.compile mode",
                       "use hardware.compile=true or e.g. hardware.compile=max-autotune")
    options = {"backend": hardware.get("compile_backend") or "inductor"}
    if isinstance(setting, str):
        options["mode"] = setting
    for model in models:
        if model is not None:
            model.compile(**options)
