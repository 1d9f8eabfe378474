"""The training layer: Lightning Trainers, a method's phases (each resumable from its own
`last.ckpt`), the best checkpoint over all phases, exact evaluation, and the rank checks that keep
a DDP run's writing to its first process. Shared by the trial and the teacher store.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.profilers import PassThroughProfiler
from omegaconf import DictConfig, OmegaConf

from kdx.checkpoints import AtomicCheckpointIO, is_intact, remove_partial_writes, set_aside
from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.hardware import accelerator_device
from kdx.interrupt import stop_if_requested
from kdx.methods.base import Budget, Method
from kdx.methods.finetune import FineTune
from kdx.results import write_json_atomic
from kdx.tasks.base import TaskSpec

PHASE_DONE = "phase_done.json"

LOWER_IS_BETTER = {"mse", "loss", "perplexity"}


def monitor_mode(spec: TaskSpec) -> str:
    return "min" if spec.main_metric in LOWER_IS_BETTER else "max"


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint keeping the best checkpoint and, with `save_last`, rewriting `last.ckpt` at
    every save point (each validation): ModelCheckpoint's own `save_last` rewrites it only when the
    best improves, which would resume a killed run from a stale epoch. One callback for both, since
    Lightning dispatches every hook of every step to each callback.

    Its state key is formatted once: Lightning names the callback by it around every hook call (a
    dozen a training step), and ModelCheckpoint formats it from its settings each time. The key is
    ModelCheckpoint's own, so checkpoints written by either resume with the other."""

    @property
    def state_key(self) -> str:
        if "_state_key" not in self.__dict__:
            key = super().state_key
            self.__dict__["_state_key"] = ModelCheckpoint.__qualname__ + key[len(type(self).__qualname__):]
        return self.__dict__["_state_key"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # kdx saves at validation ends only: without a step or time interval there is nothing to
        # decide per batch (ModelCheckpoint reads a handful of trainer properties to find that out)
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self.save_last_if_not_saved(trainer)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self.save_last_if_not_saved(trainer)

    def save_last_if_not_saved(self, trainer) -> None:
        # a new best was saved together with last.ckpt at this step (ModelCheckpoint then skips)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def checkpoint_callback(spec: TaskSpec, dirpath: Path, every_n_epochs: int = 1, save_last: bool = False) -> Checkpoint:
    """Keeps the best checkpoint on the task's headline metric (`best-epochEE-stepS.ckpt`), and with
    `save_last` the phase's resume point `last.ckpt`, rewritten at every validation."""
    return Checkpoint(
        dirpath=str(dirpath), filename="best-epoch{epoch:02d}-step{step}", auto_insert_metric_name=False,
        monitor=spec.main_metric_name, mode=monitor_mode(spec), save_top_k=1, every_n_epochs=every_n_epochs,
        save_last=save_last, enable_version_counter=False,
    )


class ThrottledProgressBar(RichProgressBar):
    """Updates the training bar at most every `min_interval_s` (and at an epoch's last batch): an
    update reads every logged metric, about a millisecond, which on a small model is a tenth of the
    step (kdx/bench); Rich's refresh thread draws it once a second anyway (`refresh_rate`)."""

    def __init__(self, min_interval_s: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.monotonic()
        if now - self._last_draw < self.min_interval_s and batch_idx + 1 < trainer.num_training_batches:
            return
        self._last_draw = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module):
        # train/loss reaches the loggers without `self.log` (DistillationModule.log_terms)
        return {**super().get_metrics(trainer, pl_module), **getattr(pl_module, "bar_values", {})}


class NoProfiler(PassThroughProfiler):
    """Profiles nothing, for free. Lightning's default profiler also profiles nothing, but builds a
    fresh generator-based context for every hook of every callback and of the module (about 2.5 µs
    each, some fifty a training step: kdx/bench); this one hands back one shared no-op context.
    A `trainer.profiler` setting (simple, advanced, pytorch) replaces it."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str):
        return self._nothing


def make_trainer(trainer_cfg: DictConfig | dict, callbacks=(), logger=False, **overrides) -> L.Trainer:
    """A Trainer from the `trainer.*` config (passed verbatim) plus overrides, for a DistillationModule
    (whose hooks stop it at a batch boundary on SIGTERM/SIGINT/SIGUSR1: kdx/interrupt.py); it writes its
    checkpoints atomically."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kwargs.update(overrides)
    kwargs["plugins"] = [*(kwargs.get("plugins") or []), AtomicCheckpointIO()]
    callbacks = list(callbacks)
    if kwargs.get("enable_progress_bar", True):
        callbacks.append(ThrottledProgressBar(leave=True))
    kwargs["profiler"] = kwargs.get("profiler") or NoProfiler()
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


def evaluate(model: nn.Module, spec: TaskSpec, datamodule, trainer_cfg: DictConfig | None = None,
             artifacts_dir: Path | None = None) -> dict:
    """Task metrics of `model` on every evaluation split, on one device (exact: no sampler padding);
    a task's own evaluators write their files (e.g. generated answers) under `artifacts_dir/<split>`."""
    # A plain inference loop over the module's own validation_step: the same metrics as a Lightning
    # `validate`, without its set-up per call and its hooks per batch (kdx/bench: evaluation row).
    module = DistillationModule(model, FineTune(), spec, optim_cfg=None)
    device = accelerator_device((trainer_cfg or {}).get("accelerator", "cpu"))
    was_training, home = model.training, next(model.parameters()).device
    datamodule.setup("validate")
    module.to(device).eval()
    module.on_validation_epoch_start()
    with torch.inference_mode():
        for index, loader in enumerate(datamodule.val_dataloader()):
            for batch_idx, batch in enumerate(loader):
                module.validation_step(move_data_to_device(batch, device), batch_idx, index)
    losses, metrics = module.validation_results()
    model.to(home).train(was_training)
    merged = {k: float(v) for k, v in {**losses, **metrics}.items()}
    if artifacts_dir is not None:
        for split, evaluator in zip(spec.eval_splits, module.evaluators):
            evaluator.write(Path(artifacts_dir) / split)
    return dict(sorted(merged.items()))


def is_rank_zero() -> bool:
    """Only the first process of a DDP run writes results (Lightning's launcher sets the first
    three; srun sets SLURM_PROCID for each task of a multi-task SLURM job)."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def budget(trainer_cfg: DictConfig) -> Budget:
    return Budget(max_epochs=trainer_cfg.get("max_epochs"), max_steps=trainer_cfg.get("max_steps"))


def load_student_weights(student: nn.Module, checkpoint: Path) -> None:
    """The student's weights from a DistillationModule checkpoint (which also holds the method's)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    student.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})


def fit_phases(cfg: DictConfig, out_dir: Path, method: Method, student: nn.Module, teacher: nn.Module | None,
               spec: TaskSpec, datamodule, loggers, teacher_outputs=None) -> tuple[Path, int]:
    """Runs the method's phases in order, each resumable from its own last.ckpt (a finished phase
    leaves phase_done.json and is not run again); returns the best checkpoint over all phases and
    the total optimizer steps."""
    phases = method.phases(budget(cfg.trainer))
    best_path, best_score, steps = None, None, 0
    sign = 1 if monitor_mode(spec) == "max" else -1
    for index, phase in enumerate(phases):
        name = None if len(phases) == 1 else f"phase{index + 1}-{phase.name}"
        ckpt_dir = out_dir / "checkpoints" / name if name else out_dir / "checkpoints"
        done_file = ckpt_dir / PHASE_DONE
        done = read_phase_done(done_file)
        if done is None:
            stop_if_requested()   # a signal between phases: the next launch starts this phase
            if index > 0 and phase.restart_from_best and best_path is not None:
                load_student_weights(student, best_path)
            done = fit_phase(cfg, method, student, teacher, spec, datamodule, phase, index, ckpt_dir,
                             loggers.for_phase(name), teacher_outputs)
            if is_rank_zero():
                write_json_atomic(done_file, done)
        steps += done["steps"]
        if best_score is None or sign * done["best_score"] >= sign * best_score:
            best_path, best_score = Path(done["best_path"]), done["best_score"]
    return best_path, steps


def read_phase_done(done_file: Path) -> dict | None:
    """A finished phase's record; a damaged one is set aside (the phase then resumes from its
    checkpoints, which end where the phase ended)."""
    if not done_file.exists():
        return None
    try:
        done = json.loads(done_file.read_text())
        if {"best_path", "best_score", "steps"} <= set(done) and Path(done["best_path"]).exists():
            return done
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        pass
    set_aside(done_file, "unreadable, or its best checkpoint is missing")
    return None


def resume_point(ckpt_dir: Path, owner: bool = True) -> Path | None:
    """The newest intact checkpoint of a phase (last.ckpt, else the newest best-*.ckpt); the
    `owner` (rank 0) sets damaged ones aside. None: the phase starts from its beginning."""
    if not ckpt_dir.is_dir():
        return None
    if owner:
        remove_partial_writes(ckpt_dir)
    candidates = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime), reverse=True)
    for candidate in candidates:
        if is_intact(candidate):
            return candidate
        if owner:
            set_aside(candidate, "not a complete checkpoint")
    return None


def student_recipe(cfg: DictConfig, method: Method) -> tuple[DictConfig, float | None]:
    """The student's optimizer config and gradient clip norm: the run's `optim.*` and
    trainer.gradient_clip_val, with the method's own recipe (`Method.student_optim`) on top."""
    recipe = dict(method.student_optim or {})
    clip = recipe.pop("gradient_clip_val", cfg.trainer.get("gradient_clip_val"))
    unknown = sorted(set(recipe) - set(cfg.optim))
    if unknown:
        raise KdxError(f"method.student_optim has keys {unknown} that are not optim.* settings",
                       f"use keys among {sorted(cfg.optim)} or gradient_clip_val")
    return OmegaConf.merge(cfg.optim, recipe), clip


def fit_phase(cfg: DictConfig, method: Method, student: nn.Module, teacher: nn.Module | None, spec: TaskSpec,
              datamodule, phase, index: int, ckpt_dir: Path, loggers, teacher_outputs=None) -> dict:
    """One phase: a fresh module and optimizer, resumed from the phase's last.ckpt when there is one."""
    optim_cfg, student_clip = student_recipe(cfg, method)
    module = DistillationModule(student, method, spec, optim_cfg, teacher, phase=index, student_clip=student_clip,
                                teacher_outputs=teacher_outputs, seed=cfg.seed)
    checkpoint = checkpoint_callback(spec, ckpt_dir, cfg.checkpoint.every_n_epochs, cfg.checkpoint.save_last)
    callbacks = [checkpoint]
    overrides = {}
    if phase.max_epochs is not None:
        overrides["max_epochs"] = phase.max_epochs
    if phase.max_steps is not None:
        overrides["max_steps"] = phase.max_steps
    overrides.update(validate_before_max_steps(cfg.trainer, overrides, datamodule))
    # Lightning rejects Trainer clipping with manual optimisation: the module clips instead.
    overrides["gradient_clip_val"] = student_clip if module.automatic_optimization else None
    trainer = make_trainer(cfg.trainer, callbacks=callbacks, logger=loggers, **overrides)
    resume = resume_point(ckpt_dir, owner=is_rank_zero())
    if resume is not None and is_rank_zero():
        print(f"[kdx] resuming from {resume}")
    # The loaders' shuffling seed is the RNG's initial seed when they are built (in fit): make it the
    # trial's in every phase, not what the previous phase's last epoch left, or a relaunch that starts
    # in phase 2 would see other batches than the uninterrupted run.
    torch.manual_seed(cfg.seed)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume is not None else None)
    if not checkpoint.best_model_path:
        raise KdxError("training ended before any evaluation, so there is no best checkpoint",
                       "train for at least one epoch, or set trainer.val_check_interval so that "
                       "validation runs within trainer.max_steps")
    return {"best_path": checkpoint.best_model_path, "best_score": float(checkpoint.best_model_score),
            "steps": int(trainer.global_step)}
