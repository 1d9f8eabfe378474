"""Hardware options a trial applies to its models: `torch.compile` (hardware.compile), and the
device that `trainer.accelerator` names for work done outside a Trainer."""

import torch
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


def accelerator_device(accelerator: str) -> torch.device:
    """The device `trainer.accelerator` names, for one process working outside a Trainer
    (evaluation, filling the teacher-output cache); a GPU process uses its own current GPU."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise KdxError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU",
                           "use hardware=cpu (trainer.accelerator=cpu)")
        return torch.device("cuda", torch.cuda.current_device())
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")
