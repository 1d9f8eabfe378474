"""Continuation-KD (Jafari et al., Findings of EMNLP 2022), docs/methods.md §3:

    L     = ψ(i)·CE(y, σ(z_S)) + (1 − ψ(i))·L_CNT
    L_CNT = mean_batch max{0, ‖z_S − φ(T_i)·z_T‖² − m·φ(T_i)}
    φ(T)  = 1 − (T − 1)/T_max,  T_i stepping down from T_max every ⌊n/T_max⌋ epochs

`distance` picks the per-sample norm: `sum` is the paper's ‖·‖² (summed over classes); `mean`
divides it by the number of classes, which is what Annealing-KD's F.mse_loss does — with m = 0,
ψ a step at epoch k and `anneal_epochs = k`, Continuation-KD is then exactly Annealing-KD
(phase 1 before epoch k, CE after). `anneal_epochs` is the n of the φ staircase (null: the
whole run, trainer.max_epochs).
"""

from typing import Literal

import torch

from kdx.errors import KdxError
from kdx.knobs import Count, NonNegative
from kdx.losses import hard_label_loss
from kdx.methods.base import Method, TrainStep
from kdx.methods.schedules import continuation_phi, continuation_psi

DISTANCES = ("sum", "mean")


def hinge_distance(student: torch.Tensor, target: torch.Tensor, margin: float, distance: str) -> torch.Tensor:
    """mean over samples of max{0, ‖z_S − target‖² − margin}; the norm is over the last dim
    (divided by its size when distance='mean'); token-level logits count each token as a sample."""
    squared = (student - target).pow(2)
    per_sample = squared.sum(-1) if distance == "sum" else squared.mean(-1)
    return (per_sample - margin).clamp_min(0).mean()


class ContinuationKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "continuation", t_max: Count = 10, margin: NonNegative = 0.1,
                 distance: Literal[DISTANCES] = "sum", anneal_epochs: Count | None = None, psi: dict | None = None):
        super().__init__()
        if distance not in DISTANCES:
            raise KdxError(f"method.distance={distance!r} is not one of {list(DISTANCES)}",
                           "use distance=sum (the paper's squared norm) or distance=mean (F.mse_loss)")
        if margin < 0:
            raise KdxError(f"method.margin={margin} is negative", "use a margin >= 0 (0 disables the hinge)")
        self.name, self.t_max, self.margin, self.distance = name, int(t_max), float(margin), distance
        self.anneal_epochs = anneal_epochs
        self.psi_schedule = dict(psi or {"kind": "ramp", "ramp_epochs": 20, "slope": 1 / 40})
        continuation_psi(0, **self.psi_schedule)  # a bad schedule fails before training

    def phi(self, step: TrainStep) -> float:
        p = step.progress
        n = self.anneal_epochs if self.anneal_epochs is not None else (p.max_epochs if p.max_epochs > 0 else None)
        return continuation_phi(p.epoch, n, self.t_max, p.step, p.total_steps)

    def psi(self, step: TrainStep) -> float:
        return continuation_psi(step.progress.epoch, **self.psi_schedule)

    def losses(self, step: TrainStep):
        student = step.student_logits()
        phi, psi = self.phi(step), self.psi(step)
        ce = hard_label_loss(student, step.labels, step.regression)
        cnt = hinge_distance(student, phi * step.teacher_logits(), self.margin * phi, self.distance)
        total = psi * ce + (1 - psi) * cnt
        return {"loss": total, "ce": ce, "cnt": cnt, "phi": student.new_tensor(phi),
                "psi": student.new_tensor(psi)}
