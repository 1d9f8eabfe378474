"""Where the teacher comes from.

1. `model.teacher.finetuned=true`: the spec's weights are already fine-tuned on this task.
2. `model.teacher.checkpoint=PATH`: a fine-tuned state dict (e.g. a teacher store's teacher.pt).
3. Otherwise the **teacher store**: the teacher is fine-tuned once and kept under
   `<paths.cache_dir>/teachers/<task>-<key>/`, content-addressed by teacher spec + tokenizer +
   task + seed + teacher training config, behind a file lock so parallel trials share one copy.
   The store keeps the checkpoint trajectory (each epoch, optionally every N steps) in order,
   which Pro-KD replays.
"""

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
from filelock import FileLock
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from kdx.errors import KdxError
from kdx.methods.finetune import FineTune
from kdx.models.student import build
from kdx.results import write_json_atomic
from kdx.tasks.base import TaskSpec
from kdx.trial import digest

TEACHER_FILE = "teacher.pt"
INFO_FILE = "info.json"


@dataclass
class Teacher:
    model: nn.Module
    source: str                                   # "finetuned", "checkpoint", or the store folder
    metrics: dict | None = None                   # validation metrics when known
    trajectory: list[Path] = field(default_factory=list)   # store checkpoints, in training order


def store_key(cfg: DictConfig) -> str:
    task = OmegaConf.to_container(cfg.task, resolve=True)
    task.pop("data_dir", None)
    teacher = OmegaConf.to_container(cfg.model.teacher, resolve=True)
    teacher.pop("checkpoint", None)
    return digest({
        "teacher": teacher, "tokenizer": OmegaConf.to_container(cfg.model.tokenizer, resolve=True)
        if cfg.model.get("tokenizer") is not None else None,  # image/vector tasks have none
        "task": task, "seed": cfg.seed, "training": OmegaConf.to_container(cfg.teacher_training, resolve=True),
        "max_length": cfg.data.max_length,
    })


def teacher_config(cfg: DictConfig, role: str = "teacher") -> DictConfig:
    """The trial config whose `model.teacher` is the spec of the method's teacher (Method.teacher_spec):
    the pair's teacher, or for role "student" (self-KD) the student's spec, initialised as the
    student is (its `init`), fine-tuned in the store under a key of its own."""
    if role == "teacher":
        return cfg
    if role != "student":
        raise ValueError(f"unknown teacher role {role!r}")
    student = OmegaConf.to_container(cfg.model.student, resolve=True)
    if student.get("init", "pretrained") == "truncated":
        raise KdxError("self-KD builds its teacher from the student spec, which model.student.init=truncated "
                       "does not describe on its own",
                       "use model.student.init=pretrained or random with self_kd")
    student["description"] = "self-KD teacher: the student's architecture and init, fine-tuned"
    derived = copy.deepcopy(cfg)
    with open_dict(derived.model):
        derived.model.teacher = student
    return derived


def build_teacher(tspec: DictConfig, num_labels: int, vocab_size: int | None) -> nn.Module:
    """A teacher spec's model; a spec with `init: random` (a self-KD teacher built from a random-init
    student spec) drops pre-trained weights, as the student does."""
    return build(tspec, num_labels, vocab_size, random_init=tspec.get("init") == "random")


def store_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir) / "teachers" / f"{cfg.task.name.replace('/', '_')}-{store_key(cfg)}"


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    path = Path(path)
    if not path.exists():
        raise KdxError(f"teacher checkpoint {path} does not exist",
                       "set model.teacher.checkpoint to a fine-tuned teacher state dict (e.g. a store's teacher.pt)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdxError(f"teacher checkpoint {path} does not fit the teacher architecture: "
                       f"{str(err).splitlines()[0][:300]}",
                       "use a checkpoint saved for this model.teacher config and task (same label count)") from None
    return model


def obtain_teacher(cfg: DictConfig, spec: TaskSpec, vocab_size: int, make_datamodule) -> Teacher:
    """The fine-tuned, frozen-ready teacher for this trial. `make_datamodule(batch_size)`
    builds the task's data for teacher fine-tuning."""
    tspec = cfg.model.teacher
    if tspec.get("finetuned", False):
        return Teacher(build_teacher(tspec, spec.num_labels, vocab_size), source="finetuned")
    if tspec.get("checkpoint"):
        model = load_state(build_teacher(tspec, spec.num_labels, vocab_size), tspec.checkpoint)
        return Teacher(model, source=str(tspec.checkpoint))
    folder = store_dir(cfg)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / INFO_FILE).exists():
            fine_tune_into_store(cfg, spec, vocab_size, make_datamodule, folder)
    info = json.loads((folder / INFO_FILE).read_text())
    model = load_state(build_teacher(tspec, spec.num_labels, vocab_size), folder / TEACHER_FILE)
    return Teacher(model, source=str(folder), metrics=info["metrics"],
                   trajectory=[folder / p for p in info["trajectory"]])


class TrajectoryCheckpoints(Callback):
    """Saves the model's weights at each epoch end and, optionally, every N optimizer steps."""

    def __init__(self, folder: Path, every_n_steps: int | None):
        self.folder = folder
        self.every_n_steps = every_n_steps
        self.saved: list[str] = []

    def _save(self, module, name: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        torch.save(module.student.state_dict(), path)
        self.saved.append(f"{self.folder.name}/{name}")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save(module, f"step-{step:07d}.pt")

    def on_train_epoch_end(self, trainer, module):
        self._save(module, f"epoch-{trainer.current_epoch + 1:03d}-step-{trainer.global_step:07d}.pt")


def fit_into_store(cfg: DictConfig, spec: TaskSpec, module, datamodule, folder: Path,
                   callbacks=(), **trainer_overrides) -> dict:
    """Fits `module` once, in a single process, keeps its best weights as `folder/teacher.pt` and
    returns their validation metrics (shared by the teacher store and the TAKD assistant)."""
    from kdx.training import best_checkpoint_callback, evaluate, make_trainer, single_process, \
        validate_before_max_steps

    best = best_checkpoint_callback(spec, folder / "work")
    trainer_cfg = single_process(cfg.trainer)
    trainer_cfg.update(trainer_overrides)
    # a run capped by max_steps inside its first epoch must still validate (best checkpoint)
    trainer_cfg.update(validate_before_max_steps(trainer_cfg, {}, datamodule))
    trainer = make_trainer(trainer_cfg, callbacks=[best, *callbacks], logger=False)
    trainer.fit(module, datamodule=datamodule)
    if best.best_model_path:  # without any validation there is no best: keep the last weights
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"])
    torch.save(module.student.state_dict(), folder / TEACHER_FILE)
    metrics = evaluate(module.student, spec, datamodule, cfg.trainer)
    for ckpt in (folder / "work").glob("*.ckpt"):
        ckpt.unlink()
    return metrics


def fine_tune_into_store(cfg: DictConfig, spec: TaskSpec, vocab_size: int, make_datamodule, folder: Path):
    from kdx.distill import DistillationModule

    print(f"[kdx] fine-tuning the teacher once into the teacher store: {folder}")
    training = cfg.teacher_training
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_teacher(cfg.model.teacher, spec.num_labels, vocab_size)
    optim = OmegaConf.merge(cfg.optim, {"lr": training.lr})
    module = DistillationModule(model, FineTune(), spec, optim)
    trajectory = TrajectoryCheckpoints(folder / "trajectory", training.get("trajectory_every_n_steps"))
    metrics = fit_into_store(cfg, spec, module, make_datamodule(training.batch_size), folder, [trajectory],
                             max_epochs=training.max_epochs, max_steps=training.max_steps)
    write_json_atomic(folder / INFO_FILE, {
        "key": store_key(cfg), "task": cfg.task.name, "seed": cfg.seed, "metrics": metrics,
        "trajectory": trajectory.saved,
        "teacher": OmegaConf.to_container(cfg.model.teacher, resolve=True),
    })
