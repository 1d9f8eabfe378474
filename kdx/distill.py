"""DistillationModule: the LightningModule of one trial.

Holds the student (trained), the teacher (frozen: eval mode, no grad, outside the module tree so
it is neither checkpointed nor DDP-wrapped), and the method (which may own extra modules). The
method computes the loss terms; this module logs them, steps the optimizer with the LR schedule,
and evaluates the task metrics on every evaluation split.
"""

import math
import warnings

import lightning as L
import torch
import torch.nn as nn

from kdx.errors import KdxError
from kdx.methods.base import Method, Progress, TrainStep
from kdx.methods.losses import hard_label_loss
from kdx.metrics import build_metrics, predictions
from kdx.tasks.base import TaskSpec, model_inputs


def logits_of(model: nn.Module, **inputs) -> torch.Tensor:
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, method: Method, spec: TaskSpec, optim_cfg,
                 teacher: nn.Module | None = None, phase: int = 0):
        super().__init__()
        self.student = student
        self.method = method
        self.spec = spec
        self.optim_cfg = optim_cfg
        self.phase = phase
        # Kept out of the module tree: not saved in checkpoints, not moved/wrapped by strategies.
        self.__dict__["teacher"] = freeze(teacher) if teacher is not None else None
        # Methods with their own optimizers (MATE-KD generator, online Pro-KD teacher) step by hand.
        self.automatic_optimization = not getattr(method, "manual_optimization", False)
        self.manual_clip_val: float | None = None   # the student's clip norm in manual mode (run.py)
        self.val_metrics = nn.ModuleList([build_metrics(spec, s) for s in spec.eval_splits])

    # ---- forward passes -------------------------------------------------------------------
    def student_forward(self, **inputs) -> torch.Tensor:
        return logits_of(self.student, **inputs)

    @torch.no_grad()
    def teacher_forward(self, **inputs) -> torch.Tensor:
        self.teacher.eval()
        return logits_of(self.teacher, **inputs)

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
        return TrainStep(batch=batch, labels=batch["labels"], regression=self.spec.is_regression,
                         progress=self.progress(), student_forward=self.student_forward,
                         teacher_forward=self.teacher_forward if self.teacher is not None else None,
                         inputs=model_inputs(batch))

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self.manual_training_step(batch, batch_idx)
        terms = self.method.losses(self.make_step(batch))
        batch_size = batch["labels"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=(name == "loss"), batch_size=batch_size)
        return terms["loss"]

    def manual_training_step(self, batch, batch_idx):
        """The method steps its optimizers; the student's LR schedule advances once per batch, so
        it stays a function of the batch count whatever the method's step pattern."""
        terms = self.method.manual_training_step(self, self.make_step(batch), batch_idx)
        with warnings.catch_warnings():  # a batch without a student step (e.g. a generator step)
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.lr_schedulers().step()
        batch_size = batch["labels"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=(name == "loss"), batch_size=batch_size)
        return None

    def clip_student_gradients(self, optimizer) -> None:
        """Manual mode: Lightning refuses Trainer(gradient_clip_val), so the module clips."""
        if self.manual_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.manual_clip_val, gradient_clip_algorithm="norm")

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        logits = self.student_forward(**model_inputs(batch))
        split = self.spec.eval_splits[dataloader_idx]
        loss = hard_label_loss(logits, batch["labels"], self.spec.is_regression)
        self.log(f"{split}/loss", loss, batch_size=batch["labels"].shape[0], add_dataloader_idx=False,
                 sync_dist=True)
        self.val_metrics[dataloader_idx].update(predictions(logits, self.spec.is_regression), batch["labels"])

    def on_validation_epoch_end(self):
        for collection in self.val_metrics:
            values = collection.compute()
            self.log_dict({k: v.float() for k, v in values.items()}, prog_bar=True, sync_dist=False)
            collection.reset()

    # ---- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = [p for p in self.student.parameters() if p.requires_grad]
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
        return [student] + [{"optimizer": extra} for extra in self.method.configure_extra_optimizers()]


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
