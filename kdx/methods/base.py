"""The method contract (docs/architecture.md, "The method contract").

A method is one module and one YAML file. It *declares* what it needs and the layers above provide
it; it never imports the trial driver, the training loop, the teacher store or the LightningModule.

- `learns_from`: what the student learns from — one of LEARNS_FROM. The teacher store provides
  it before the student is built (fine-tuning teacher, self-teacher or assistant once, keyed and
  locked).
- `outputs`: which model outputs the losses read beyond logits (hidden states, attention maps).
- `setup(context)`: called once with everything the method may need (task spec, tokenizer,
  student, teacher, trajectory, the trainer's budget); builds the method's own modules.
- `phases(budget)`: the training phases (Annealing-KD: anneal, then CE), from the trainer budget.
- `losses(step)`: the student's loss terms for one batch — `loss` is the total to minimise,
  every other entry an unweighted term logged as `train/<name>`.
- `extra_optimizers()` / `optimizer_sequence(progress)` / `extra_losses(name, step)`: methods
  that train more than the student (MATE-KD's generator, online Pro-KD's teacher) declare their
  optimizers, which ones step on a batch, and each one's loss; the LightningModule runs the
  alternation (toggling, backward, clipping, stepping).

Schedules are pure functions of `step.progress`, so a resumed run continues them exactly.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from kdx.models.outputs import LOGITS_ONLY, ModelOutputs, OutputRequest
from kdx.tasks.base import TaskSpec
from kdx.tasks.families import TOKEN_LEVEL

# What a method learns from, provided by the teacher store:
#   none            no teacher (fine-tuning, label smoothing, teacher-free KD)
#   teacher         the pair's teacher, fine-tuned on the task (model.teacher)
#   self            a fine-tuned, frozen copy of the student's own architecture and init (self-KD)
#   assistant       a model.assistant distilled from the teacher with the method's own loss (TAKD)
#   trajectory      the teacher plus its fine-tuning checkpoints in order (Pro-KD replay)
#   online_teacher  an untrained copy of the pair's teacher that the method trains itself (Pro-KD online)
LEARNS_FROM = ("none", "teacher", "self", "assistant", "trajectory", "online_teacher")
# The sources that arrive as a trained model, frozen for the whole trial.
FROZEN_SOURCES = ("teacher", "self", "assistant", "trajectory")
STUDENT = "student"   # the name of the student's optimizer in optimizer_sequence


@dataclass(frozen=True)
class Budget:
    """The trainer's limits for the whole trial (a method splits them into phases)."""

    max_epochs: int | None = None     # None / -1: bounded by steps only
    max_steps: int | None = None      # None / -1: bounded by epochs only


@dataclass
class SetupContext:
    """Everything a method may use to set itself up (before training starts)."""

    spec: TaskSpec
    student: nn.Module
    tokenizer: object | None = None
    teacher: nn.Module | None = None                 # frozen (teacher, self, assistant, trajectory)
    teacher_source: str | None = None                # where it came from, for messages
    trajectory: list[Path] = field(default_factory=list)   # teacher checkpoints, in training order
    new_teacher: Callable[[], nn.Module] | None = None      # online_teacher: an untrained teacher copy
    budget: Budget = Budget()
    gradient_clip_val: float | None = None           # the student's clip norm (trainer.gradient_clip_val)
    cache_dir: Path | None = None                    # paths.cache_dir: for what a method computes once (seq_kd)


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
    """One training batch as a method sees it."""

    batch: dict
    labels: torch.Tensor
    family: str                                          # the task family (kdx/tasks/families.py)
    progress: Progress
    inputs: dict                                         # the model inputs of `batch`
    student_forward: Callable[..., ModelOutputs]         # f(**inputs) -> ModelOutputs (with the method's outputs)
    teacher_forward: Callable[..., ModelOutputs] | None  # no grad; None without a frozen teacher
    # The teacher's outputs on this batch's own inputs from the teacher-output cache (kdx/cache.py),
    # when the trial has one: `teacher()` without overrides reads it instead of running the teacher.
    cached_teacher: Callable[[], ModelOutputs] | None = None

    @property
    def regression(self) -> bool:
        return self.family == "regression"

    @property
    def token_mask(self) -> torch.Tensor | None:
        """(B, T) real-token mask for token-level families (distillation terms average over it);
        None for sequence-level ones."""
        return self.inputs.get("attention_mask") if self.family in TOKEN_LEVEL else None

    def student(self, **overrides) -> ModelOutputs:
        return self.student_forward(**{**self.inputs, **overrides})

    def teacher(self, **overrides) -> ModelOutputs:
        if self.teacher_forward is None:
            raise RuntimeError("this method reads a teacher, but the trial has none")
        if not overrides and self.cached_teacher is not None:
            return self.cached_teacher()
        return self.teacher_forward(**{**self.inputs, **overrides})

    def student_logits(self, **overrides) -> torch.Tensor:
        return self.student(**overrides).logits

    def teacher_logits(self, **overrides) -> torch.Tensor:
        return self.teacher(**overrides).logits


@dataclass(frozen=True)
class Phase:
    """One stage of a multi-phase method (Annealing-KD: the annealing phase, then CE)."""

    name: str
    max_epochs: int | None = None     # None: the trainer's max_epochs
    max_steps: int | None = None      # None: the trainer's max_steps
    restart_from_best: bool = True    # start from the best checkpoint of the previous phase
    # (every phase starts with a fresh optimizer and LR schedule)


@dataclass
class ExtraOptimizer:
    """An optimizer of the method's own modules, stepped by the LightningModule."""

    name: str
    make: Callable[[], torch.optim.Optimizer]
    clip: float | None = None         # gradient-norm clip of its parameters (None: no clipping)
    # `schedule(phase_batches)` -> the LR multiplier as a function of this optimizer's own step
    # count (None: a constant LR)
    schedule: Callable[[int], Callable[[int], float]] | None = None


class Method(nn.Module):
    """Base class. Subclasses set `name`, `learns_from` (and `outputs`) and implement `losses`."""

    name: str = "method"
    learns_from: str = "none"
    outputs: OutputRequest = LOGITS_ONLY
    # learns_from="assistant": epochs of the assistant's distillation (None: the trainer's max_epochs)
    assistant_epochs: int | None = None
    # The student's optimiser recipe where the method's paper fixes one (MATE-KD, Combined-KD):
    # entries replace `optim.*` keys, `gradient_clip_val` replaces trainer.gradient_clip_val.
    student_optim: dict | None = None
    # True when the method loads other weights into its frozen teacher while training (Pro-KD
    # replay): the teacher-output cache, keyed by the weights at the start, is then not used,
    # unless the method loads them in `teacher_stages` stages (frozen within each) and names the
    # one loaded now in `loaded_stage`: the cache then keeps one cache per stage (kdx/cache.py).
    changes_teacher_weights: bool = False
    teacher_stages: int = 0
    loaded_stage: int | None = None
    # Whether the losses read span start/end targets (span_prediction tasks: BCE, span KD); methods
    # built on class labels or sequence-level logits leave it False and such tasks refuse them.
    handles_span_targets: bool = False

    @property
    def needs_frozen_teacher(self) -> bool:
        return self.learns_from in FROZEN_SOURCES

    def setup(self, context: SetupContext) -> None:
        """Called once before training; the default needs nothing."""

    def phases(self, budget: Budget) -> list[Phase]:
        return [Phase("train", restart_from_best=False)]

    def losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def student_side_parameters(self) -> list[nn.Parameter]:
        """Parameters of the method's own modules that train with the student, in its optimizer
        (feature KD's projections)."""
        return []

    # ---- methods with optimizers of their own -------------------------------------------------
    def extra_optimizers(self) -> list[ExtraOptimizer]:
        """Optimizers besides the student's; any makes the module step them by hand."""
        return []

    def student_updates(self, batches: int) -> int:
        """How many of a phase's `batches` step the student (its LR schedule spans these)."""
        return batches

    def optimizer_sequence(self, progress: Progress) -> list[str]:
        """The optimizers that step on this batch, in order (STUDENT or an extra's name). The
        first one's step is the batch's global step; Lightning's step counter sees only that one."""
        return [STUDENT]

    def extra_losses(self, name: str, step: TrainStep) -> dict[str, torch.Tensor]:
        """The loss of extra optimizer `name`: `loss` is what it minimises (not logged); every other
        entry is logged as `train/<entry>`."""
        raise NotImplementedError(f"{type(self).__name__} declares optimizer {name!r} but no loss for it")
