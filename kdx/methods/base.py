"""The method interface.

A method turns one training batch into named loss terms. `losses(step)` returns a dict whose
`loss` entry is the total to minimise; every other entry is an unweighted term that the
DistillationModule logs under `train/<name>`. Everything a method needs comes from `step`:
the batch, the student and (frozen) teacher forward passes, and training progress. Schedules
are pure functions of `step.progress`, so a resumed run continues them exactly.
"""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Progress:
    """Where training is, within the current phase (Lightning restores these on resume)."""

    epoch: int            # 0-based epoch within the phase
    step: int             # optimizer steps done within the phase
    max_epochs: int       # epochs in the phase (-1 if bounded by steps only)
    total_steps: int      # optimizer steps in the phase
    phase: int = 0        # index into the method's phases

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass
class TrainStep:
    batch: dict
    labels: torch.Tensor
    regression: bool
    progress: Progress
    student_forward: Callable[..., torch.Tensor]       # f(**inputs) -> logits
    teacher_forward: Callable[..., torch.Tensor] | None  # no grad; None without a teacher
    inputs: dict                                        # the model inputs of `batch`

    def student_logits(self, **overrides) -> torch.Tensor:
        return self.student_forward(**{**self.inputs, **overrides})

    def teacher_logits(self, **overrides) -> torch.Tensor:
        if self.teacher_forward is None:
            raise RuntimeError("this method needs a teacher, but the trial has none")
        return self.teacher_forward(**{**self.inputs, **overrides})


@dataclass(frozen=True)
class Phase:
    """One stage of a multi-phase method (Annealing-KD: the annealing phase, then CE)."""

    name: str
    max_epochs: int | None = None     # None: trainer.max_epochs
    max_steps: int | None = None      # None: trainer.max_steps
    restart_from_best: bool = True    # start from the best checkpoint of the previous phase
    fresh_optimizer: bool = True


class Method(nn.Module):
    """Base class. Subclasses set `name`, `needs_teacher` and implement `losses`."""

    name: str = "method"
    needs_teacher: bool = False
    # Which spec the teacher is built from: "teacher" (model.teacher) or "student" (self-KD: a
    # fine-tuned copy of the student's architecture, kept in the teacher store under its own key).
    teacher_spec: str = "teacher"

    def teacher_for_student(self, teacher, cfg, spec, vocab_size, make_datamodule):
        """The model the student learns from, given the trial's teacher (TAKD: an assistant
        distilled from it). Default: the teacher itself."""
        return teacher

    def phases(self) -> list[Phase]:
        return [Phase("train", restart_from_best=False)]

    def losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # Methods that step more than the student's optimizer (MATE-KD's generator, Pro-KD's online
    # teacher) set `manual_optimization = True`: the DistillationModule then calls
    # `manual_training_step` instead of `losses`, appends `configure_extra_optimizers()` after the
    # student's optimizer (module.optimizers()[0]), clips the student with trainer.gradient_clip_val
    # (module.manual_clip_val) and advances the student's LR schedule once per batch.
    manual_optimization: bool = False

    def configure_extra_optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def manual_training_step(self, module, step: TrainStep, batch_idx: int) -> dict[str, torch.Tensor]:
        """Does the batch's optimizer steps itself; returns the loss terms to log."""
        raise NotImplementedError
