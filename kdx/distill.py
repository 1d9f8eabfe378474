"""DistillationModule: the LightningModule of one trial.

Holds the student (trained), the frozen teacher (eval mode, no grad, outside the module tree so
it is neither checkpointed nor DDP-wrapped) and the method (which may own extra modules). The
method computes the loss terms; this module runs the forward passes the method asked for, logs
every term, steps the optimizers with the LR schedule, and evaluates the task metrics on every
evaluation split.

Methods that declare optimizers of their own (MATE-KD's generator, online Pro-KD's teacher) run
in manual optimisation: per batch, the method names the optimizers that step, in order; each
steps under `toggled_optimizer` (the other parameters get no gradient) with its own clipping.
The first is the batch's Lightning step; later ones step the raw optimizer, so the global step
counts batches whatever the pattern. The student's LR schedule advances once per batch.
"""

import math
import warnings

import lightning as L
import torch
import torch.nn as nn
from torchmetrics import MeanMetric

from kdx import timing
from kdx.errors import KdxError
from kdx.losses import task_loss
from kdx.methods.base import STUDENT, Method, Progress, TrainStep
from kdx.metrics import build_metrics, predictions
from kdx.models.outputs import ModelOutputs, enable_outputs, forward, freeze
from kdx.tasks.base import TaskSpec, model_inputs


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, method: Method, spec: TaskSpec, optim_cfg,
                 teacher: nn.Module | None = None, phase: int = 0, student_clip: float | None = None,
                 teacher_outputs=None):
        super().__init__()
        self.student = student
        self.method = method
        self.spec = spec
        self.optim_cfg = optim_cfg
        self.phase = phase
        # Kept out of the module tree: not saved in checkpoints, not moved/wrapped by strategies.
        self.__dict__["teacher"] = freeze(teacher) if teacher is not None else None
        # kdx.cache.TeacherOutputs: the teacher's logits on the training split, read by example id
        self.teacher_outputs = teacher_outputs
        enable_outputs(student, method.outputs, "student")
        if teacher is not None:
            enable_outputs(teacher, method.outputs, "teacher")
        self.extras = {extra.name: extra for extra in method.extra_optimizers()}
        self.automatic_optimization = not self.extras
        # The student's clip norm, applied here in manual mode only (Lightning refuses Trainer
        # clipping there); in automatic mode the Trainer clips.
        self.student_clip = student_clip
        self.val_metrics = nn.ModuleList([build_metrics(spec, s) for s in spec.eval_splits])
        # The task loss per evaluation split, averaged over examples and synced across processes
        # once per validation (a per-batch `log(sync_dist=True)` synced on every batch).
        self.val_losses = nn.ModuleList([MeanMetric() for _ in spec.eval_splits])

    # ---- forward passes -------------------------------------------------------------------
    def student_forward(self, **inputs) -> ModelOutputs:
        return forward(self.student, inputs, self.method.outputs)

    @torch.no_grad()
    def teacher_forward(self, **inputs) -> ModelOutputs:
        self.teacher.eval()
        return forward(self.teacher, inputs, self.method.outputs)

    def on_fit_start(self):
        if self.teacher is not None:
            self.teacher.to(self.device)

    on_validation_start = on_fit_start

    # ---- training -------------------------------------------------------------------------
    def progress(self) -> Progress:
        return Progress(epoch=self.current_epoch, step=self.global_step,
                        max_epochs=self.trainer.max_epochs or -1,
                        total_steps=int(self.trainer.estimated_stepping_batches), phase=self.phase)

    def make_step(self, batch) -> TrainStep:
        return TrainStep(batch=batch, labels=batch["labels"], family=self.spec.family,
                         progress=self.progress(), inputs=model_inputs(batch),
                         student_forward=self.student_forward,
                         teacher_forward=self.teacher_forward if self.teacher is not None else None,
                         cached_teacher=None if self.teacher_outputs is None
                         else lambda: self.teacher_outputs.outputs(batch, self.device))

    def log_terms(self, terms: dict, batch) -> None:
        # The loggers write a step's values every `log_every_n_steps` steps and drop the others;
        # Lightning's bookkeeping of one logged value costs milliseconds, so the steps whose values
        # would be dropped are not logged at all (Lightning's own rule decides which those are).
        connector = getattr(self._trainer, "_logger_connector", None)
        if connector is not None and not connector.should_update_logs:
            return
        batch_size = batch["labels"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=(name == "loss"), batch_size=batch_size)

    def on_train_batch_start(self, batch, batch_idx):
        timing.mark_first_step()

    def training_step(self, batch, batch_idx):
        step = self.make_step(batch)
        if not self.automatic_optimization:
            return self.manual_training_step(step, batch)
        terms = self.method.losses(step)
        self.log_terms(terms, batch)
        return terms["loss"]

    def manual_training_step(self, step: TrainStep, batch):
        names = [STUDENT, *self.extras]
        optimizers = dict(zip(names, self.optimizers()))
        logged = {}
        for position, name in enumerate(self.method.optimizer_sequence(step.progress)):
            optimizer = optimizers[name]
            with self.toggled_optimizer(optimizer):
                if name == STUDENT:
                    terms = self.method.losses(step)
                    logged.update(terms)
                else:
                    terms = self.method.extra_losses(name, step)
                    logged.update({k: v for k, v in terms.items() if k != "loss"})
                optimizer.zero_grad()
                self.manual_backward(terms["loss"])
                clip = self.student_clip if name == STUDENT else self.extras[name].clip
                if clip:
                    self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
                if position == 0:
                    optimizer.step()             # counts as the batch's global step
                else:
                    optimizer.optimizer.step()   # the raw optimizer: no second count
        with warnings.catch_warnings():  # a batch without a student step (e.g. a generator step)
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.lr_schedulers().step()
        self.log_terms(logged, batch)
        return None

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        logits = forward(self.student, model_inputs(batch)).logits
        loss = task_loss(self.spec.family, logits, batch["labels"])
        self.val_losses[dataloader_idx].update(loss.detach(), weight=batch["labels"].shape[0])
        if self.spec.metrics:
            self.val_metrics[dataloader_idx].update(predictions(logits, self.spec.family), batch["labels"])

    def on_validation_epoch_end(self):
        for split, mean in zip(self.spec.eval_splits, self.val_losses):
            if mean.update_count:
                self.log(f"{split}/loss", mean.compute(), sync_dist=False)
                mean.reset()
        for collection in self.val_metrics:
            if not len(collection):
                continue
            values = collection.compute()
            self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=True, sync_dist=False)
            collection.reset()

    # ---- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = [p for p in self.student.parameters() if p.requires_grad] + self.method.student_side_parameters()
        if cfg.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.name == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
        else:
            raise KdxError(f"optim.name={cfg.name!r} is unknown", "use optim.name=adamw or optim.name=sgd")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = lr_multiplier(cfg, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        student = {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.automatic_optimization:
            return student
        return [student] + [{"optimizer": extra.make()} for extra in self.extras.values()]


def lr_multiplier(cfg, total_steps: int):
    """The LR schedule as a pure function of the step: linear/cosine decay after linear warmup,
    constant, or multistep (×gamma at each milestone fraction)."""
    warmup = int(cfg.get("warmup_ratio", 0.0) * total_steps)
    kind = cfg.get("schedule", "linear")
    milestones = [int(m * total_steps) for m in cfg.get("milestones", [])]

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - done)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return cfg.get("gamma", 0.1) ** sum(step >= m for m in milestones)
        raise KdxError(f"optim.schedule={kind!r} is unknown",
                       "use optim.schedule=linear, cosine, constant or multistep")

    multiplier(warmup)  # an unknown schedule fails now, not at the first step after warmup
    return multiplier
