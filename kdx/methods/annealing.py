"""Annealing-KD (Jafari et al., EACL 2021), docs/methods.md §2 — two phases on raw logits:

    phase 1 (E1 epochs):  L_I  = MSE(z_S, Φ·z_T),   Φ = temp/τ_max,  temp = 1 … τ_max (annealing_scale)
    phase 2 (E2 epochs):  L_II = CE(y, σ(z_S))       (MSE for regression)

Phase 2 starts from the best phase-1 checkpoint with a fresh optimizer and LR schedule, and the
result is the best checkpoint over both phases (the training layer runs the phases).

Epoch budget: E1/E2 are `phase1_epochs`/`phase2_epochs` when given; otherwise `trainer.max_epochs`
(N) is split: E1 = ⌊phase1_fraction·N + ½⌋ (nearest integer, halves round up; at least 1, at most
N−1), E2 = N − E1, so `trainer.max_epochs=18` gives the paper's 14 + 4, `trainer.max_epochs=4`
gives 3 + 1 and 6 × 0.75 = 4.5 gives 5 + 1. A step budget (`trainer.max_steps` > 0) is split by the
same rule. Whichever bound ends phase 1 first sets the Φ staircase: its epochs when they all run,
its steps when the step cap ends it earlier (see kdx.distill.epochs_that_run).
"""

import math

from kdx.errors import KdxError
from kdx.knobs import Count, OpenFraction
from kdx.losses import annealed_mse, hard_label_loss
from kdx.methods.base import Budget, Method, Phase, Progress, TrainStep
from kdx.methods.schedules import annealing_scale


def split_budget(total: int, fraction: float, what: str) -> tuple[int, int]:
    """(first, second) with first + second = total, each at least 1: first = ⌊fraction·total + ½⌋,
    halves rounding up (the 1e-9 keeps 0.7 × 5 = 3.4999… from rounding down)."""
    if total < 2:
        raise KdxError(f"annealing needs {what} >= 2 to split between its two phases, got {total}",
                       f"raise {what}, or give method.phase1_epochs and method.phase2_epochs")
    first = min(total - 1, max(1, math.floor(fraction * total + 0.5 + 1e-9)))
    return first, total - first


def annealing_phases(budget: Budget, phase1_epochs: int | None, phase2_epochs: int | None,
                     phase1_fraction: float) -> list[Phase]:
    """Phase 1 (anneal) and phase 2 (CE from phase 1's best checkpoint), each with its share of the
    trainer budget (shared with Combined-KD)."""
    epochs = (None, None)
    if phase1_epochs is not None or phase2_epochs is not None:
        if phase1_epochs is None or phase2_epochs is None:
            raise KdxError("method.phase1_epochs and method.phase2_epochs must be given together",
                           "set both, or neither (then trainer.max_epochs is split by phase1_fraction)")
        epochs = (int(phase1_epochs), int(phase2_epochs))
    elif budget.max_epochs is not None and budget.max_epochs > 0:
        epochs = split_budget(int(budget.max_epochs), phase1_fraction, "trainer.max_epochs")
    steps = (None, None)
    if budget.max_steps is not None and budget.max_steps > 0:
        steps = split_budget(int(budget.max_steps), phase1_fraction, "trainer.max_steps")
    return [Phase("anneal", max_epochs=epochs[0], max_steps=steps[0], restart_from_best=False),
            Phase("ce", max_epochs=epochs[1], max_steps=steps[1], restart_from_best=True)]


def phase1_scale(progress: Progress, tau_max: int) -> float:
    """Φ at this point of phase 1 (a pure function of the phase's epoch/step)."""
    p = progress
    return annealing_scale(p.epoch, p.max_epochs if p.max_epochs > 0 else None, tau_max, p.step, p.total_steps)


def schedule_terms(phi: float, tau_max: int, like) -> dict:
    """Φ and the paper's temperature T = τ_max·(1 − Φ) + 1 (τ_max … 1), logged every step so a run
    shows the schedule it followed."""
    return {"phi": like.new_tensor(phi), "temperature": like.new_tensor(tau_max * (1 - phi) + 1)}


def check_phase1_fraction(phase1_fraction: float) -> None:
    if not 0 < phase1_fraction < 1:
        raise KdxError(f"method.phase1_fraction={phase1_fraction} must lie in (0, 1)",
                       "e.g. 0.78 (the paper's 14 of 18 epochs)")


class AnnealingKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "annealing", tau_max: Count = 7, phase1_epochs: Count | None = None,
                 phase2_epochs: Count | None = None, phase1_fraction: OpenFraction = 14 / 18):
        super().__init__()
        check_phase1_fraction(phase1_fraction)
        self.name, self.tau_max = name, int(tau_max)
        self.phase1_epochs, self.phase2_epochs = phase1_epochs, phase2_epochs
        self.phase1_fraction = phase1_fraction

    def phases(self, budget: Budget) -> list[Phase]:
        return annealing_phases(budget, self.phase1_epochs, self.phase2_epochs, self.phase1_fraction)

    def losses(self, step: TrainStep):
        student = step.student_logits()
        if step.progress.phase == 0:
            phi = phase1_scale(step.progress, self.tau_max)
            annealed = annealed_mse(student, step.teacher_logits(), phi)
            return {"loss": annealed, "annealed_mse": annealed, **schedule_terms(phi, self.tau_max, student)}
        ce = hard_label_loss(student, step.labels, step.regression)
        return {"loss": ce, "ce": ce}
