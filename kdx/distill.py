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
counts batches whatever the pattern. The student's LR schedule advances on the batches where the
student steps (and spans `method.student_updates(batches)`); an extra optimizer's schedule on its own.
Weight decay skips biases and normalisation weights unless `optim.decay_bias_and_norm`.
"""

import math
import warnings

import lightning as L
import torch
import torch.nn as nn
from torchmetrics import MeanMetric

from kdx import timing
from kdx.errors import KdxError
from kdx.interrupt import stop_if_requested
from kdx.losses import task_loss
from kdx.methods.base import STUDENT, Method, Progress, TrainStep
from kdx.metrics import GroupedUpdates, build_metrics, predictions
from kdx.models.outputs import ModelOutputs, enable_outputs, forward, freeze
from kdx.resume import seed_epoch
from kdx.tasks.base import TaskSpec, model_inputs
from kdx.tasks.families import TOKEN_LEVEL


class DistillationModule(L.LightningModule):
    def __init__(self, student: nn.Module, method: Method, spec: TaskSpec, optim_cfg,
                 teacher: nn.Module | None = None, phase: int = 0, student_clip: float | None = None,
                 teacher_outputs=None, seed: int | None = None):
        super().__init__()
        self.student = student
        self.method = method
        self.spec = spec
        self.optim_cfg = optim_cfg
        self.phase = phase
        # The trial's seed: every training epoch reseeds the global RNGs from (seed, phase, epoch), so
        # a resumed run draws what the uninterrupted one drew (kdx/resume.py). None: no reseeding.
        self.seed = seed
        self.span: tuple[int, int] | None = None   # (max_epochs, total_steps) of the running fit
        # Kept out of the module tree: not saved in checkpoints, not moved/wrapped by strategies.
        self.__dict__["teacher"] = freeze(teacher) if teacher is not None else None
        # kdx.cache.TeacherOutputs: the teacher's logits on the training split, read by example id
        self.teacher_outputs = teacher_outputs
        self.bar_values: dict[str, float] = {}   # the last logged train/loss, for the progress bar
        enable_outputs(student, method.outputs, "student")
        if teacher is not None:
            enable_outputs(teacher, method.outputs, "teacher")
        self.extras = {extra.name: extra for extra in method.extra_optimizers()}
        self.automatic_optimization = not self.extras
        # The student's clip norm, applied here in manual mode only (Lightning refuses Trainer
        # clipping there); in automatic mode the Trainer clips.
        self.student_clip = student_clip
        self.val_metrics = nn.ModuleList([build_metrics(spec, s) for s in spec.eval_splits])
        self.evaluators = [spec.evaluator(s) for s in spec.eval_splits] if spec.evaluator else []
        # The task loss per evaluation split, averaged over examples and synced across processes
        # once per validation (a per-batch `log(sync_dist=True)` synced on every batch).
        self.val_losses = nn.ModuleList([MeanMetric() for _ in spec.eval_splits])
        self.val_updates = [GroupedUpdates(loss, metrics if spec.metrics else None, spec.family not in TOKEN_LEVEL)
                            for loss, metrics in zip(self.val_losses, self.val_metrics)]

    def __setattr__(self, name, value):
        # Lightning names the running hook in `_current_fx_name` before and after every hook call
        # (about thirty a training step); nn.Module's __setattr__ first checks whether the value is
        # a parameter, module or buffer, ~4 µs a call (kdx/bench). A string is none of those.
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    # ---- forward passes -------------------------------------------------------------------
    def student_forward(self, **inputs) -> ModelOutputs:
        return forward(self.student, inputs, self.method.outputs)

    @torch.no_grad()
    def teacher_forward(self, **inputs) -> ModelOutputs:
        if self.teacher.training:   # a model shared with training code; eval() itself costs ms a step
            self.teacher.eval()
        return forward(self.teacher, inputs, self.method.outputs)

    def on_fit_start(self):
        if self.teacher is not None:
            self.teacher.to(self.device)

    on_validation_start = on_fit_start

    # ---- training -------------------------------------------------------------------------
    def on_train_start(self):
        self.span = None   # the phase's length, worked out again for each fit

    def progress(self) -> Progress:
        if self.span is None:   # fixed within a fit; Lightning recomputes its estimate on every read
            trainer = self.trainer
            total = int(trainer.estimated_stepping_batches)
            steps_per_epoch = trainer.num_training_batches / trainer.accumulate_grad_batches
            self.span = (epochs_that_run(trainer.max_epochs, steps_per_epoch, total), total)
        return Progress(epoch=self.current_epoch, step=self.global_step, max_epochs=self.span[0],
                        total_steps=self.span[1], phase=self.phase)

    def make_step(self, batch) -> TrainStep:
        return TrainStep(batch=batch, labels=batch["labels"], family=self.spec.family,
                         progress=self.progress(), inputs=model_inputs(batch),
                         student_forward=self.student_forward,
                         teacher_forward=self.teacher_forward if self.teacher is not None else None,
                         cached_teacher=None if self.teacher_outputs is None
                         else lambda: self.teacher_outputs.outputs(batch, self.device))

    def log_terms(self, terms: dict) -> None:
        """A step's loss terms to the loggers as `train/<name>`, with the step and `epoch` that Lightning's
        `self.log` path gives them, on the steps Lightning's own rule (`log_every_n_steps`) writes; the
        others are dropped unlogged. Straight to each logger: `self.log` costs ~1.5 ms a value (it moves
        its bookkeeping to the value's device on every call), and Lightning's logger connector makes the
        CSV logger rewrite its file at every call (kdx/bench); the CSV logger now writes every
        `flush_logs_every_n_steps` (100) and when the fit ends, fails or is interrupted."""
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None)
        if connector is None or not connector.should_update_logs:
            return
        values = torch.stack([v.detach().float().mean() for v in terms.values()]).tolist()   # one device sync
        logged = {f"train/{name}": value for name, value in zip(terms, values)}
        self.bar_values = {"train/loss": logged["train/loss"]} if "train/loss" in logged else {}
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            logger.log_metrics({**logged, "epoch": self.current_epoch}, step)

    def check_finite(self, terms: dict, owner: str = "") -> None:
        """The first NaN/inf loss stops the trial. Only the total is read each step (one value,
        one device sync): a non-finite term makes the total non-finite too, whatever its weight
        (0·inf and 0·nan are nan). Stacking every term took a dozen small operations a step
        (kdx/bench); the terms are read only to name the culprit."""
        if math.isfinite(terms["loss"].item()):   # the loss is a scalar (it is backpropagated)
            return
        values = [v.detach().float().sum() for v in terms.values()]
        bad = [(n, float(v)) for n, v in zip(terms, values) if not torch.isfinite(v)]
        name, value = next((b for b in bad if b[0] != "loss"), bad[0])   # the term the total came from
        raise KdxError(f"non-finite {owner}loss term train/{name} = {value} at step {self.global_step} "
                       f"(phase {self.phase + 1}, epoch {self.current_epoch})",
                       "check the method's and the optimizer's settings (a lower optim.lr, gradient clipping); "
                       "trainer.detect_anomaly=true finds the operation that first gives NaN")

    # What a trial needs at epoch and batch boundaries lives in the module's own hooks, which
    # Lightning calls anyway: as callbacks they cost a dispatch at every hook of every step.
    def on_train_epoch_start(self):
        if self.seed is not None:
            seed_epoch(self.seed, self.phase, self.current_epoch)

    def on_train_batch_start(self, batch, batch_idx):
        timing.mark_first_step()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        stop_if_requested()   # a signal stops the trial at a batch boundary (kdx/interrupt.py)

    def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        stop_if_requested()

    def training_step(self, batch, batch_idx):
        step = self.make_step(batch)
        if not self.automatic_optimization:
            return self.manual_training_step(step, batch)
        terms = self.method.losses(step)
        self.check_finite(terms)
        self.log_terms(terms)
        return terms["loss"]

    def manual_training_step(self, step: TrainStep, batch):
        names = [STUDENT, *self.extras]
        optimizers = dict(zip(names, self.optimizers()))
        scheduled = [STUDENT, *(name for name, extra in self.extras.items() if extra.schedule)]
        found = self.lr_schedulers()
        schedulers = dict(zip(scheduled, found if isinstance(found, list) else [found]))
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
                self.check_finite(terms, "" if name == STUDENT else f"{name} ")
                optimizer.zero_grad()
                self.manual_backward(terms["loss"])
                clip = self.student_clip if name == STUDENT else self.extras[name].clip
                if clip:
                    self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
                if position == 0:
                    optimizer.step()             # counts as the batch's global step
                else:
                    optimizer.optimizer.step()   # the raw optimizer: no second count
                if name in schedulers:
                    schedulers[name].step()
        self.log_terms(logged)
        return None

    # ---- evaluation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        logits = forward(self.student, model_inputs(batch)).logits
        loss = task_loss(self.spec.family, logits, batch["labels"])
        predicted = predictions(logits, self.spec.family) if self.spec.metrics else None
        self.val_updates[dataloader_idx].add(loss, batch["labels"].shape[0], predicted, batch["labels"])
        if self.evaluators:
            self.evaluators[dataloader_idx].update(self.student, batch, logits)

    def on_validation_epoch_end(self):
        losses, metrics = self.validation_results()
        self.log_dict(losses, sync_dist=False)
        self.log_dict(metrics, prog_bar=True, sync_dist=False)

    def validation_results(self) -> tuple[dict, dict]:
        """The evaluation just run, per split: the loss, and the task's metrics (torchmetrics and the
        task's own evaluators); resets the accumulators for the next one."""
        losses, metrics = {}, {}
        for updates in self.val_updates:
            updates.flush()
        for split, mean in zip(self.spec.eval_splits, self.val_losses):
            if mean.update_count:
                losses[f"{split}/loss"] = mean.compute()
                mean.reset()
        for collection in self.val_metrics:
            if len(collection):
                metrics.update({k: v.float() for k, v in collection.compute().items()})
                collection.reset()
        for split, evaluator in zip(self.spec.eval_splits, self.evaluators):
            metrics.update({f"{split}/{k}": float(v) for k, v in evaluator.compute().items()})
        return losses, metrics

    def on_validation_epoch_start(self):
        for evaluator in self.evaluators:
            evaluator.reset()

    # ---- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = parameter_groups(self.student, self.method.student_side_parameters(), cfg.weight_decay,
                                  cfg.get("decay_bias_and_norm", False))
        if cfg.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        elif cfg.name == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr)
        elif cfg.name == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        else:
            raise KdxError(f"optim.name={cfg.name!r} is unknown", "use optim.name=adamw, adam or sgd")
        batches = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = lr_multiplier(cfg, max(1, self.method.student_updates(batches)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        student = {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.automatic_optimization:
            return student
        extras = []
        for extra in self.extras.values():
            extra_optimizer = extra.make()
            entry = {"optimizer": extra_optimizer}
            if extra.schedule is not None:
                entry["lr_scheduler"] = {"scheduler": torch.optim.lr_scheduler.LambdaLR(
                    extra_optimizer, extra.schedule(batches)), "interval": "step"}
            extras.append(entry)
        return [student] + extras


def is_decayed(module: nn.Module, name: str) -> bool:
    """Weight decay skips biases and the weights of normalisation layers (LayerNorm, BatchNorm,
    RMSNorm, ...: any module class whose name contains "Norm")."""
    return not (name.endswith("bias") or "Norm" in type(module).__name__)


def parameter_groups(model: nn.Module, side: list[nn.Parameter], weight_decay: float,
                     decay_all: bool = False) -> list[dict]:
    """The trainable parameters of `model` and the method's `side` parameters in two groups:
    decayed by `weight_decay`, and biases / norm weights without decay (side parameters: the 1-D
    ones); everything decayed when `decay_all`."""
    decayed, exempt, seen = [], [], set()

    def add(param: nn.Parameter, decay: bool) -> None:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            (decayed if decay_all or decay else exempt).append(param)

    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            add(param, is_decayed(module, name))
    for param in side:
        add(param, param.dim() > 1)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def epochs_that_run(max_epochs: int | None, steps_per_epoch: float, total_steps: int) -> int:
    """The phase's epoch count when its epochs bound it, −1 when its step cap ends it first (then
    the epoch-based schedules run over its steps instead: a cap inside epoch 0 would otherwise
    freeze them at their first value). `steps_per_epoch` may be fractional (accumulation) or inf."""
    if max_epochs is None or max_epochs <= 0 or math.isinf(steps_per_epoch):
        return -1
    return max_epochs if total_steps >= max_epochs * math.ceil(steps_per_epoch) else -1


def lr_multiplier(cfg, total_steps: int):
    """The LR schedule as a pure function of the step: linear/cosine decay after linear warmup
    (`warmup_steps`, else `warmup_ratio` of the steps), constant, or multistep (×gamma at each
    milestone fraction)."""
    steps = cfg.get("warmup_steps")
    warmup = int(steps) if steps is not None else int(cfg.get("warmup_ratio", 0.0) * total_steps)
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
    if steps is not None and warmup >= total_steps:
        # e.g. MATE-KD's official 2,138 warmup steps in a short run: the lr never reaches its peak
        warnings.warn(f"warmup_steps={warmup} is not shorter than this phase's {total_steps} optimizer steps, so "
                      f"the learning rate never reaches its peak; set a smaller warmup_steps (or warmup_ratio)",
                      stacklevel=2)
    return multiplier
