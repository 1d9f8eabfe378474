"""Pro-KD (Rezagholizadeh et al., COLING 2022), docs/methods.md §4: the student follows the teacher's
training trajectory instead of distilling from the final teacher only.

    teacher checkpoints T^(1) … T^(N) (in training order);  stage i = ⌊N · progress⌋  (< N)
    kd_kl:         L = (1−α)·CE(y, S(x)) + α·τ²·KL(σ(T^(i)(x)/τ) ‖ σ(S(x)/τ))
    annealed_mse:  L = MSE(S(x), Φ·T^(i)(x)),   Φ = Annealing-KD's temp/τ_max over the phase
    optional final phase: CE(y, S(x)) from the best checkpoint of the trajectory phase

teacher_mode=replay: T^(i) are the teacher store's saved checkpoints (each epoch, plus every
`teacher_training.trajectory_every_n_steps` steps), of which every `ckpt_interval`-th is used
(the last always); the stage is a pure function of the phase's progress, so a resumed run loads
the same checkpoint. teacher_mode=online: the method trains its own copy of the teacher on
CE(y, T(x)) alongside the student (its own AdamW), and T^(i) is a snapshot of it taken every
`ckpt_interval` student steps (kept in the checkpoint, so resume continues it). Replay learns from
the teacher store's `trajectory`; online from an `online_teacher` (an untrained copy of the pair's
teacher), which it trains with an optimizer of its own, stepped after the student on every batch.
[check] the paper's exact loss and temperature schedule: `loss` is a knob.
"""

import copy
import re
from pathlib import Path
from typing import Literal

import torch

from kdx.errors import KdxError
from kdx.knobs import Count, NonNegative, NonNegativeInt, Positive, Weight
from kdx.losses import annealed_mse, hard_label_loss, kd_objective
from kdx.methods.annealing import phase1_scale, schedule_terms
from kdx.methods.base import STUDENT, Budget, ExtraOptimizer, Method, Phase, Progress, SetupContext, TrainStep
from kdx.models.outputs import freeze, logits_of
from kdx.models.weights import load_state

TEACHER = "teacher"   # the online teacher's optimizer

LOSSES = ("kd_kl", "annealed_mse")
TEACHER_MODES = ("replay", "online")


def stage_index(fraction: float, stages: int) -> int:
    """Which of `stages` equal shares of the phase `fraction` (0 … 1) falls in."""
    return min(stages - 1, int(fraction * stages))


def distinct_steps(trajectory: list[Path]) -> list[Path]:
    """The trajectory with one checkpoint per optimizer step: a store that saved an every-N-steps
    checkpoint and an epoch-end one at the same step holds the same weights twice, which would
    give them two stage shares. File names end in `step-<global step>.pt`."""
    kept, seen = [], set()
    for path in trajectory:
        match = re.search(r"step-(\d+)\.pt$", Path(path).name)
        step = int(match.group(1)) if match else path
        if step not in seen:
            seen.add(step)
            kept.append(path)
    return kept


def every_kth(trajectory: list[Path], k: int) -> list[Path]:
    """T^(k), T^(2k), …, always ending with the final checkpoint."""
    chosen = list(trajectory[k - 1::k])
    if trajectory and (not chosen or chosen[-1] != trajectory[-1]):
        chosen.append(trajectory[-1])
    return chosen


class ProKD(Method):
    def __init__(self, name: str = "prokd", loss: Literal[LOSSES] = "kd_kl",
                 teacher_mode: Literal[TEACHER_MODES] = "replay",
                 ckpt_interval: Count = 1, alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True, tau_max: Count = 7, final_ce_epochs: NonNegativeInt = 0,
                 teacher_lr: Positive = 1e-3, teacher_weight_decay: NonNegative = 0.01):
        super().__init__()
        if loss not in LOSSES:
            raise KdxError(f"method.loss={loss!r} is not one of {list(LOSSES)}", "set method.loss=kd_kl or annealed_mse")
        if teacher_mode not in TEACHER_MODES:
            raise KdxError(f"method.teacher_mode={teacher_mode!r} is not one of {list(TEACHER_MODES)}",
                           "set method.teacher_mode=replay (teacher store trajectory) or online")
        if ckpt_interval < 1 or final_ce_epochs < 0:
            raise KdxError(f"method.ckpt_interval={ckpt_interval}, final_ce_epochs={final_ce_epochs}: need "
                           "ckpt_interval >= 1 and final_ce_epochs >= 0")
        self.name, self.loss, self.teacher_mode = name, loss, teacher_mode
        self.ckpt_interval, self.final_ce_epochs = int(ckpt_interval), int(final_ce_epochs)
        self.alpha, self.temperature, self.tau_squared, self.tau_max = alpha, temperature, tau_squared, int(tau_max)
        self.teacher_lr, self.teacher_weight_decay = teacher_lr, teacher_weight_decay
        self.learns_from = "trajectory" if teacher_mode == "replay" else "online_teacher"
        self.changes_teacher_weights = teacher_mode == "replay"   # loads T^(i) into the frozen teacher
        self.checkpoints: list[Path] = []
        self.loaded_stage: int | None = None        # which T^(i) the frozen teacher holds now
        self.teacher_clip: float | None = None

    # ---- setup ----------------------------------------------------------------------------
    def setup(self, context: SetupContext) -> None:
        if self.teacher_mode == "replay":
            if not context.trajectory:
                raise KdxError("method=prokd teacher_mode=replay needs the teacher's checkpoint trajectory, "
                               f"but the teacher came from {context.teacher_source!r}, which has none",
                               "let kdx fine-tune the teacher into the teacher store (model.teacher.finetuned=false, "
                               "model.teacher.checkpoint=null), or use method.teacher_mode=online")
            self.checkpoints = every_kth(distinct_steps(list(context.trajectory)), self.ckpt_interval)
            self.teacher_stages = len(self.checkpoints)   # one teacher-output cache per T^(i)
            self.__dict__["teacher_model"] = context.teacher   # the trial's frozen teacher, reloaded per stage
            return
        self.online_teacher = context.new_teacher()
        self.target_teacher = freeze(copy.deepcopy(self.online_teacher))    # T^(i), a snapshot
        self.teacher_clip = context.gradient_clip_val

    def phases(self, budget: Budget) -> list[Phase]:
        if not self.final_ce_epochs:
            return [Phase("trajectory", restart_from_best=False)]
        total = budget.max_epochs
        if total is None or total <= self.final_ce_epochs:
            raise KdxError(f"method.final_ce_epochs={self.final_ce_epochs} leaves no epochs of "
                           f"trainer.max_epochs={total} for the trajectory phase",
                           "raise trainer.max_epochs or lower method.final_ce_epochs (0: no CE phase)")
        return [Phase("trajectory", max_epochs=total - self.final_ce_epochs, restart_from_best=False),
                Phase("ce", max_epochs=self.final_ce_epochs, restart_from_best=True)]

    # ---- the loss against T^(i) -----------------------------------------------------------
    def distillation(self, student, teacher, step: TrainStep) -> dict[str, torch.Tensor]:
        if self.loss == "annealed_mse":
            phi = phase1_scale(step.progress, self.tau_max)
            annealed = annealed_mse(student, teacher, phi)
            return {"loss": annealed, "annealed_mse": annealed, **schedule_terms(phi, self.tau_max, student)}
        return kd_objective(student, teacher, step.labels, step.regression, self.alpha, self.temperature,
                            self.tau_squared, mask=step.token_mask)

    def final_ce(self, step: TrainStep) -> dict[str, torch.Tensor]:
        ce = hard_label_loss(step.student_logits(), step.labels, step.regression)
        return {"loss": ce, "ce": ce}

    def losses(self, step: TrainStep):
        if step.progress.phase > 0:
            return self.final_ce(step)
        if self.teacher_mode == "online":
            return self.follow_online_teacher(step)
        stage = stage_index(step.progress.fraction, len(self.checkpoints))
        self.load_stage(stage)
        terms = self.distillation(step.student_logits(), step.teacher_logits(), step)
        terms["stage"] = step.labels.new_tensor(stage, dtype=torch.float32)
        return terms

    # ---- replay: T^(i) from the teacher store ---------------------------------------------
    def load_stage(self, stage: int) -> None:
        if stage != self.loaded_stage:
            load_state(self.teacher_model, self.checkpoints[stage])
            self.teacher_model.eval()
            self.loaded_stage = stage

    # ---- online: a teacher trained alongside ----------------------------------------------
    def extra_optimizers(self) -> list[ExtraOptimizer]:
        if self.teacher_mode != "online":
            return []
        return [ExtraOptimizer(TEACHER, clip=self.teacher_clip, make=lambda: torch.optim.AdamW(
            self.online_teacher.parameters(), lr=self.teacher_lr, weight_decay=self.teacher_weight_decay))]

    def optimizer_sequence(self, progress: Progress) -> list[str]:
        """Online, trajectory phase: the student learns from T^(i), then the teacher takes one
        fine-tuning step; Lightning's global step counts the student's updates (one per batch)."""
        if self.teacher_mode == "online" and progress.phase == 0:
            return [STUDENT, TEACHER]
        return [STUDENT]

    def follow_online_teacher(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Distil from T^(i): the online teacher as snapshotted at the last multiple of ckpt_interval."""
        if step.progress.step % self.ckpt_interval == 0:
            self.target_teacher.load_state_dict(self.online_teacher.state_dict())
        self.target_teacher.eval()   # Lightning's train() reaches it too (it is in the module tree)
        with torch.no_grad():
            target = logits_of(self.target_teacher, **step.inputs)
        terms = self.distillation(step.student_logits(), target, step)
        # T^(i) is the snapshot taken at step i·ckpt_interval
        terms["stage"] = step.labels.new_tensor(step.progress.step // self.ckpt_interval, dtype=torch.float32)
        return terms

    def extra_losses(self, name: str, step: TrainStep) -> dict[str, torch.Tensor]:
        """One fine-tuning step of the online teacher: CE(y, T(x))."""
        ce = hard_label_loss(logits_of(self.online_teacher, **step.inputs), step.labels, step.regression)
        return {"loss": ce, "teacher_ce": ce}
