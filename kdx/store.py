"""The teacher store: what a method learns from (its declared `learns_from`), provided once.

Where the teacher comes from:
1. `model.teacher.finetuned=true`: the spec's weights are already fine-tuned on this task.
2. `model.teacher.checkpoint=PATH`: a fine-tuned state dict (e.g. a teacher store's teacher.pt).
3. Otherwise the store fine-tunes it once and keeps it under
   `<paths.cache_dir>/teachers/<task>-<key>/`, content-addressed by teacher spec + tokenizer +
   task + seed + teacher training config, behind a file lock so parallel trials share one copy.
   The store keeps the checkpoint trajectory (each epoch, optionally every N steps) in order,
   which Pro-KD replays.

The other sources are built on the same mechanism: the self-KD teacher is the student's spec
fine-tuned under a key of its own; the TAKD assistant is `model.assistant` distilled once from the
teacher with the method's own loss, keyed by teacher + assistant + recipe; the online teacher is
an untrained copy of the pair's teacher that the method trains itself.
"""

import copy
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn as nn
from filelock import FileLock
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from kdx.checkpoints import is_intact, save_atomic, set_aside
from kdx.cache import open_teacher_outputs
from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.hashing import digest
from kdx.methods.base import LEARNS_FROM, Method
from kdx.methods.finetune import FineTune
from kdx.models.student import build, build_student
from kdx.models.weights import load_state
from kdx.results import write_json_atomic
from kdx.tasks.base import TaskSpec
from kdx.trial import drop_default_teacher_slice
from kdx.training import checkpoint_callback, evaluate, make_trainer, single_process, validate_before_max_steps

TEACHER_FILE = "teacher.pt"
INFO_FILE = "info.json"


@dataclass
class Teacher:
    model: nn.Module
    source: str                                   # "finetuned", "checkpoint", or the store folder
    metrics: dict | None = None                   # validation metrics when known
    trajectory: list[Path] = field(default_factory=list)   # store checkpoints, in training order


@dataclass
class Provided:
    """What the store hands the trial for a method's `learns_from`."""

    teacher: Teacher | None = None                       # frozen for the whole trial
    new_teacher: Callable[[], nn.Module] | None = None   # online_teacher: builds an untrained copy


# ---- what a method learns from ------------------------------------------------------------------
def provide(method: Method, cfg: DictConfig, spec: TaskSpec, vocab_size: int | None, make_datamodule) -> Provided:
    """The source `method.learns_from` names, fine-tuned or distilled into the store when needed.
    `make_datamodule(batch_size, task_overrides)` builds the task's data for that training."""
    kind = method.learns_from
    if kind not in LEARNS_FROM:
        raise KdxError(f"method={method.name} learns from {kind!r}", f"a method learns from one of {list(LEARNS_FROM)}")
    if kind == "none":
        return Provided()
    if kind != "self" and cfg.model.get("teacher") is None:
        raise KdxError(f"method={cfg.method.name} needs a teacher, but model={cfg.model.name} has none",
                       "choose a model pair with a teacher (e.g. model=tiny) or method=finetune")
    if not method.needs_frozen_teacher:   # online_teacher: the method trains its own copy
        return Provided(new_teacher=lambda: build_teacher(cfg.model.teacher, spec, vocab_size))
    if kind == "self":
        return Provided(teacher=obtain_teacher(self_teacher_config(cfg), spec, vocab_size, make_datamodule))
    teacher = obtain_teacher(cfg, spec, vocab_size, make_datamodule)
    if kind == "assistant":
        teacher = obtain_assistant(cfg, method, teacher, spec, vocab_size, make_datamodule)
    return Provided(teacher=teacher)


# ---- the teacher ---------------------------------------------------------------------------------
def store_key(cfg: DictConfig) -> str:
    task = OmegaConf.to_container(cfg.task, resolve=True)
    task.pop("data_dir", None)
    teacher = OmegaConf.to_container(cfg.model.teacher, resolve=True)
    teacher.pop("checkpoint", None)
    training = {"task": task, "teacher_training": OmegaConf.to_container(cfg.teacher_training, resolve=True)}
    drop_default_teacher_slice(training)
    return digest({
        "teacher": teacher, "tokenizer": OmegaConf.to_container(cfg.model.tokenizer, resolve=True)
        if cfg.model.get("tokenizer") is not None else None,  # image/vector tasks have none
        "task": task, "seed": cfg.seed, "training": training["teacher_training"],
        "max_length": cfg.data.max_length,
    })


def teacher_task_overrides(cfg: DictConfig) -> dict:
    """The task settings the teacher's fine-tuning data differs by from the trial's (its own slice,
    `teacher_training.max_train_examples`); {} when it is fine-tuned on the trial's data."""
    rows = cfg.teacher_training.get("max_train_examples")
    if "max_train_examples" not in cfg.task:
        if rows is not None:
            raise KdxError(f"teacher_training.max_train_examples={rows}, but task={cfg.task.name} has no "
                           "max_train_examples slice to set",
                           "drop the override (this task's size is set by its own keys, e.g. task.train_size)")
        return {}
    return {} if rows == cfg.task.max_train_examples else {"max_train_examples": rows}


def self_teacher_config(cfg: DictConfig) -> DictConfig:
    """The trial config whose `model.teacher` is the student's spec, initialised as the student is
    (its `init`): the self-KD teacher, fine-tuned in the store under a key of its own."""
    student = OmegaConf.to_container(cfg.model.student, resolve=True)
    # A student truncated from the pre-trained checkpoint is described by its spec alone; one truncated
    # from the fine-tuned teacher would need that teacher first.
    if student.get("init", "pretrained") == "truncated" and student.get("truncate_from", "pretrained") != "pretrained":
        raise KdxError("self-KD builds its teacher from the student spec, which model.student.init=truncated "
                       f"with truncate_from={student.get('truncate_from')} does not describe on its own",
                       "use model.student.truncate_from=pretrained (or init=pretrained|random) with self_kd")
    student["description"] = "self-KD teacher: the student's architecture and init, fine-tuned"
    derived = copy.deepcopy(cfg)
    with open_dict(derived.model):
        derived.model.teacher = student
    # Trained as the student would be without a teacher (Yuan et al.'s self-training): the
    # student's learning rate and epochs, not the big teacher's.
    if derived.get("teacher_training") is not None:
        with open_dict(derived.teacher_training):
            derived.teacher_training.lr = cfg.optim.lr
            derived.teacher_training.max_epochs = cfg.trainer.max_epochs
            if "max_train_examples" in derived.teacher_training:   # and on the student's data
                derived.teacher_training.max_train_examples = cfg.task.get("max_train_examples")
    return derived


def build_teacher(tspec: DictConfig, spec: TaskSpec, vocab_size: int | None) -> nn.Module:
    """A teacher spec's model for the task; a spec with `init: random` or `init: truncated` (a self-KD
    teacher built from the student's spec) is initialised as that student is."""
    if tspec.get("init") == "truncated":
        return build_student(tspec, spec.num_labels, vocab_size,
                             lambda _pretrained: build(tspec, spec.num_labels, vocab_size, family=spec.family),
                             spec.family)
    return build(tspec, spec.num_labels, vocab_size, random_init=tspec.get("init") == "random", family=spec.family)


def store_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir) / "teachers" / f"{cfg.task.name.replace('/', '_')}-{store_key(cfg)}"


def obtain_teacher(cfg: DictConfig, spec: TaskSpec, vocab_size: int | None, make_datamodule) -> Teacher:
    """The fine-tuned, frozen-ready teacher for this trial."""
    tspec = cfg.model.teacher
    if tspec.get("finetuned", False):
        return Teacher(build_teacher(tspec, spec, vocab_size), source="finetuned")
    if tspec.get("checkpoint"):
        model = load_state(build_teacher(tspec, spec, vocab_size), tspec.checkpoint)
        return Teacher(model, source=str(tspec.checkpoint))
    folder = store_dir(cfg)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not entry_is_intact(folder):
            fine_tune_into_store(cfg, spec, vocab_size, make_datamodule, folder)
    info = json.loads((folder / INFO_FILE).read_text())
    model = load_state(build_teacher(tspec, spec, vocab_size), folder / TEACHER_FILE)
    return Teacher(model, source=str(folder), metrics=info["metrics"],
                   trajectory=[folder / p for p in info["trajectory"]])


def entry_is_intact(folder: Path) -> bool:
    """Whether a store entry is complete: info.json (written last) readable, teacher.pt and the
    trajectory intact. A damaged entry is set aside (renamed, kept) so that it is made again."""
    if not (folder / INFO_FILE).exists():
        return False
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        files = [folder / TEACHER_FILE, *(folder / p for p in info.get("trajectory", []))]
        if "metrics" in info and all(is_intact(f) for f in files):
            return True
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        pass
    set_aside(folder, "a teacher store entry with an unreadable or incomplete file")
    return False


class TrajectoryCheckpoints(Callback):
    """Saves the model's weights at each epoch end and, optionally, every N optimizer steps."""

    def __init__(self, folder: Path, every_n_steps: int | None):
        self.folder = folder
        self.every_n_steps = every_n_steps
        self.saved: list[str] = []
        self.last_step: int | None = None

    def _save(self, module, name: str, step: int):
        if step == self.last_step:   # an every-N-steps save at an epoch end: the same weights, kept once
            return
        self.last_step = step
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        save_atomic(module.student.state_dict(), path)
        self.saved.append(f"{self.folder.name}/{name}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save(module, f"step-{step:07d}.pt", step)

    def on_train_epoch_end(self, trainer, module):
        self._save(module, f"epoch-{trainer.current_epoch + 1:03d}-step-{trainer.global_step:07d}.pt",
                   trainer.global_step)


def fit_into_store(cfg: DictConfig, spec: TaskSpec, module, datamodule, folder: Path,
                   callbacks=(), **trainer_overrides) -> dict:
    """Fits `module` once, in a single process, keeps its best weights as `folder/teacher.pt` and
    returns their validation metrics (the teacher, the self-teacher and the assistant)."""
    best = checkpoint_callback(spec, folder / "work")
    trainer_cfg = single_process(cfg.trainer)
    trainer_cfg.update(trainer_overrides)
    # a run capped by max_steps inside its first epoch must still validate (best checkpoint)
    trainer_cfg.update(validate_before_max_steps(trainer_cfg, {}, datamodule))
    trainer = make_trainer(trainer_cfg, callbacks=[best, *callbacks], logger=False)
    trainer.fit(module, datamodule=datamodule)
    if best.best_model_path:  # without any validation there is no best: keep the last weights
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"])
    save_atomic(module.student.state_dict(), folder / TEACHER_FILE)
    metrics = evaluate(module.student, spec, datamodule, cfg.trainer)
    for ckpt in (folder / "work").glob("*.ckpt"):
        ckpt.unlink()
    return metrics


def trajectory_saves(training: DictConfig, batches_per_epoch: int) -> int | None:
    """How many weight files the teacher's trajectory keeps: one at each epoch end and one every
    `trajectory_every_n_steps` optimizer steps, a step that is both kept once (None: unbounded)."""
    batches_per_epoch = max(1, batches_per_epoch)
    bounds = [batches_per_epoch * int(training.max_epochs)] if (training.get("max_epochs") or -1) > 0 else []
    bounds += [int(training.max_steps)] if (training.get("max_steps") or -1) > 0 else []
    if not bounds:
        return None
    steps = min(bounds)
    epoch_ends = {min(epoch * batches_per_epoch, steps) for epoch in range(1, math.ceil(steps / batches_per_epoch) + 1)}
    every = training.get("trajectory_every_n_steps")
    return len(epoch_ends | (set(range(int(every), steps + 1, int(every))) if every else set()))


def readable_size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def require_free_space(folder: Path, model: nn.Module, training: DictConfig, datamodule) -> None:
    """Refuses to start a teacher's fine-tuning that cannot fit on the disk, before any training:
    the trajectory's weight files and teacher.pt, plus two Lightning checkpoints (weights and the
    two Adam moments each) while the best one is replaced."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    datamodule.setup("fit")
    saves = trajectory_saves(training, len(datamodule.train_dataloader()))
    if saves is None:   # no epoch or step bound: Lightning refuses that fit itself
        return
    needed = weights * (saves + 1 + 2 * 3)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise KdxError(f"fine-tuning this teacher into the store needs about {readable_size(needed)} ({saves} "
                       f"trajectory files of {readable_size(weights)}, teacher.pt and two training checkpoints), "
                       f"but only {readable_size(free)} are free under {existing}",
                       "free some space, keep fewer trajectory files (a larger or null "
                       "teacher_training.trajectory_every_n_steps), or put the store elsewhere (paths.cache_dir=...)")


def fine_tune_into_store(cfg: DictConfig, spec: TaskSpec, vocab_size: int | None, make_datamodule, folder: Path):
    print(f"[kdx] fine-tuning the teacher once into the teacher store: {folder}")
    training = cfg.teacher_training
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_teacher(cfg.model.teacher, spec, vocab_size)
    optim = OmegaConf.merge(cfg.optim, {"lr": training.lr})
    module = DistillationModule(model, FineTune(), spec, optim)
    trajectory = TrajectoryCheckpoints(folder / "trajectory", training.get("trajectory_every_n_steps"))
    datamodule = make_datamodule(training.batch_size, teacher_task_overrides(cfg))
    require_free_space(folder, model, training, datamodule)
    metrics = fit_into_store(cfg, spec, module, datamodule, folder, [trajectory],
                             max_epochs=training.max_epochs, max_steps=training.max_steps)
    write_json_atomic(folder / INFO_FILE, {
        "key": store_key(cfg), "task": cfg.task.name, "seed": cfg.seed, "metrics": metrics,
        "trajectory": trajectory.saved, "train_examples": len(datamodule.train_dataloader().dataset),
        "teacher": OmegaConf.to_container(cfg.model.teacher, resolve=True),
    })


# ---- the teacher assistant -------------------------------------------------------------------------
def assistant_epochs(cfg: DictConfig, method: Method) -> int:
    return int(method.assistant_epochs if method.assistant_epochs is not None else cfg.trainer.max_epochs)


def assistant_recipe(cfg: DictConfig, method: Method) -> dict:
    """Everything that decides the assistant's weights besides the teacher."""
    return {"assistant": OmegaConf.to_container(cfg.model.assistant, resolve=True),
            "method": OmegaConf.to_container(cfg.method, resolve=True),
            "epochs": assistant_epochs(cfg, method), "max_steps": cfg.trainer.get("max_steps"),
            "optim": OmegaConf.to_container(cfg.optim, resolve=True), "batch_size": cfg.data.batch_size}


def assistant_dir(cfg: DictConfig, method: Method) -> Path:
    tspec = cfg.model.teacher
    teacher_id = {"store": store_key(cfg), "checkpoint": tspec.get("checkpoint"),
                  "finetuned": tspec.get("finetuned", False)}
    key = digest({"teacher": teacher_id, "recipe": assistant_recipe(cfg, method), "seed": cfg.seed})
    return Path(cfg.paths.cache_dir) / "teachers" / f"{cfg.task.name.replace('/', '_')}-assistant-{key}"


def obtain_assistant(cfg: DictConfig, method: Method, teacher: Teacher, spec: TaskSpec, vocab_size: int | None,
                     make_datamodule) -> Teacher:
    """`model.assistant`, distilled from `teacher` with the method's own loss (once; then read from
    the store)."""
    aspec = cfg.model.get("assistant")
    if aspec is None:
        raise KdxError(f"method={cfg.method.name} needs a teacher assistant, but model={cfg.model.name} has no "
                       "model.assistant",
                       "add an `assistant:` model spec (between teacher and student in size) to the model "
                       "pair, e.g. as in conf/model/tiny.yaml, or pass +model.assistant=...")
    folder = assistant_dir(cfg, method)
    folder.parent.mkdir(parents=True, exist_ok=True)

    def source_for_truncation(which: str):
        if which == "finetuned":
            return teacher.model
        return build(cfg.model.teacher, spec.num_labels, vocab_size, family=spec.family)

    def fresh_assistant():
        return build_student(aspec, spec.num_labels, vocab_size, source_for_truncation, spec.family)

    with FileLock(str(folder) + ".lock"):
        if not entry_is_intact(folder):
            print(f"[kdx] distilling the teacher assistant once into the teacher store: {folder}")
            datamodule = make_datamodule(cfg.data.batch_size)
            outputs = open_teacher_outputs(cfg, method, spec, teacher.model, datamodule)   # teacher logits, once
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            module = DistillationModule(fresh_assistant(), method, spec, cfg.optim, teacher.model,
                                        teacher_outputs=outputs)
            metrics = fit_into_store(cfg, spec, module, datamodule, folder, max_epochs=assistant_epochs(cfg, method))
            write_json_atomic(folder / INFO_FILE, {"task": cfg.task.name, "seed": cfg.seed, "metrics": metrics,
                                                   "teacher_source": teacher.source,
                                                   "recipe": assistant_recipe(cfg, method)})
    info = json.loads((folder / INFO_FILE).read_text())
    return Teacher(load_state(fresh_assistant(), folder / TEACHER_FILE), source=str(folder), metrics=info["metrics"])
