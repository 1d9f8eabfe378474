"""Building Lightning Trainers and evaluating a model, shared by the trial and the teacher store."""

from pathlib import Path

import lightning as L
import torch.nn as nn
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from kdx.methods.finetune import FineTune
from kdx.tasks.base import TaskSpec

LOWER_IS_BETTER = {"mse", "loss"}


def monitor_mode(spec: TaskSpec) -> str:
    return "min" if spec.main_metric in LOWER_IS_BETTER else "max"


def best_checkpoint_callback(spec: TaskSpec, dirpath: Path, every_n_epochs: int = 1) -> ModelCheckpoint:
    """Keeps the best checkpoint on the task's headline metric."""
    return ModelCheckpoint(
        dirpath=str(dirpath), filename="best-epoch{epoch:02d}-step{step}", auto_insert_metric_name=False,
        monitor=spec.main_metric_name, mode=monitor_mode(spec), save_top_k=1, every_n_epochs=every_n_epochs,
    )


def last_checkpoint_callback(dirpath: Path) -> ModelCheckpoint:
    """Keeps `last.ckpt`, rewritten at every validation (resume point). ModelCheckpoint's own
    `save_last` only rewrites it when the best checkpoint improves, which would resume a killed run
    from a stale epoch."""
    return ModelCheckpoint(dirpath=str(dirpath), filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)


def make_trainer(trainer_cfg: DictConfig | dict, callbacks=(), logger=False, **overrides) -> L.Trainer:
    """A Trainer from the `trainer.*` config (passed verbatim) plus overrides."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kwargs.update(overrides)
    callbacks = list(callbacks)
    if kwargs.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar(leave=True))
    return L.Trainer(callbacks=callbacks, logger=logger, enable_model_summary=False, **kwargs)


def validate_before_max_steps(trainer_cfg, overrides: dict, datamodule) -> dict:
    """A run capped by max_steps inside its first epoch would never validate (Lightning validates
    at epoch ends), so it would have no best checkpoint: validate at the last step instead."""
    max_steps = overrides.get("max_steps", trainer_cfg.get("max_steps", -1))
    if max_steps is None or max_steps <= 0 or trainer_cfg.get("val_check_interval") is not None:
        return {}
    datamodule.setup("fit")
    steps_per_epoch = len(datamodule.train_dataloader()) // int(trainer_cfg.get("accumulate_grad_batches", 1))
    return {"val_check_interval": max_steps} if max_steps < steps_per_epoch else {}


def single_process(trainer_cfg: DictConfig | dict) -> dict:
    """Trainer settings for work done once, before the trial's own (possibly DDP) fit: fine-tuning
    a teacher or an assistant into the store. Under DDP the other ranks start only at the trial's
    own fit, so a multi-process fit here would wait forever for them."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kwargs.update(devices=1, num_nodes=1, strategy="auto")
    return kwargs


def evaluate(model: nn.Module, spec: TaskSpec, datamodule, trainer_cfg: DictConfig | None = None) -> dict:
    """Task metrics of `model` on every evaluation split, on one device (exact: no sampler padding)."""
    from kdx.distill import DistillationModule

    module = DistillationModule(model, FineTune(), spec, optim_cfg=None)
    accelerator = (trainer_cfg or {}).get("accelerator", "cpu") if trainer_cfg is not None else "cpu"
    if accelerator == "auto":
        accelerator = "auto"
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    merged = {}
    for r in results:
        merged.update({k: float(v) for k, v in r.items()})
    return dict(sorted(merged.items()))
