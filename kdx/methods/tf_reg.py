"""Teacher-free KD, the regularisation variant (Yuan et al., CVPR 2020), docs/methods.md §1.

A hand-designed "virtual teacher" puts probability a on the gold class and spreads the rest:

    p^d(c) = a if c = y else (1 − a)/(K − 1),      q = σ(p^d/τ)

    variant=paper:      L = (1 − α)·CE(y, σ(z_S)) + α·τ²·KL(q ‖ σ(z_S/τ))
    variant=reference:  L = (1 − α)·CE(y, σ(z_S)) + α·m·(1/K)·KL(q ‖ σ(z_S))      (m = multiplier, 100)

`paper` is the formula as the paper writes it. `reference` is what the authors' code computes
(`loss_kd_regularization`): the student's logits are not divided by τ, the KL is averaged over
every element (an extra ÷K) and scaled by a multiplier of 100 instead of τ²; at τ = 20 its
gradients are about 20× stronger and it pulls the student towards the nearly uniform q.
`soften` says what τ acts on [check]: `probabilities` (default) divides p^d itself by τ before the
softmax, as both the formula and the code do; `log_probabilities` softens p^d like a teacher's
logits, σ(log p^d / τ), so that τ = 1 gives p^d back.
Regression tasks have no class distribution: there the loss is the plain MSE, as in `finetune`.
"""

from typing import Literal

import torch

from kdx.errors import KdxError
import torch.nn.functional as F

from kdx.knobs import OpenFraction, Positive, Weight
from kdx.losses import IGNORE_INDEX, hard_label_loss, kd_kl, kl_per_item, masked_mean
from kdx.methods.base import Method, TrainStep
from kdx.methods.label_smoothing import one_hot

SOFTEN = ("probabilities", "log_probabilities")
VARIANTS = ("paper", "reference")


def reference_regulariser(student_logits: torch.Tensor, teacher_input: torch.Tensor, temperature: float,
                           multiplier: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """m·(1/K)·KL(σ(teacher_input/τ) ‖ σ(z_S)): the reference code's element-wise-mean KL (over
    samples × classes, unmasked samples only), with the student's logits at temperature 1."""
    log_q = F.log_softmax(teacher_input / temperature, dim=-1)
    return multiplier * masked_mean(kl_per_item(student_logits, log_q), mask) / student_logits.size(-1)


def virtual_teacher(labels: torch.Tensor, num_classes: int, correct_prob: float) -> torch.Tensor:
    """p^d: `correct_prob` on the gold class, the rest shared equally by the other classes."""
    gold = one_hot(labels, num_classes)
    return gold * correct_prob + (1 - gold) * (1 - correct_prob) / (num_classes - 1)


class TeacherFreeReg(Method):
    learns_from = "none"

    def __init__(self, name: str = "tf_reg", correct_prob: OpenFraction = 0.99, alpha: Weight = 0.1,
                 temperature: Positive = 20.0, tau_squared: bool = True,
                 soften: Literal[SOFTEN] = "probabilities", variant: Literal[VARIANTS] = "reference",
                 multiplier: Positive = 100.0):
        super().__init__()
        if variant not in VARIANTS:
            raise KdxError(f"method.variant={variant!r} is not one of {list(VARIANTS)}",
                           "use variant=paper (the paper's formula) or variant=reference (the authors' code)")
        if not 0 < correct_prob < 1:
            raise KdxError(f"method.correct_prob={correct_prob} must lie in (0, 1)",
                           "the paper uses a >= 0.9, e.g. method.correct_prob=0.99")
        if soften not in SOFTEN:
            raise KdxError(f"method.soften={soften!r} is not one of {list(SOFTEN)}",
                           "use soften=probabilities (reference code) or soften=log_probabilities")
        self.name, self.correct_prob, self.alpha = name, correct_prob, alpha
        self.temperature, self.tau_squared, self.soften = temperature, tau_squared, soften
        self.variant, self.multiplier = variant, multiplier

    def losses(self, step: TrainStep):
        student = step.student_logits()
        ce = hard_label_loss(student, step.labels, step.regression)
        if step.regression:
            return {"loss": ce, "ce": ce}
        num_classes = student.size(-1)
        if num_classes < 2:
            raise KdxError("tf_reg needs at least two classes", "use method=finetune for this task")
        p_d = virtual_teacher(step.labels, num_classes, self.correct_prob)
        # kd_kl softmaxes its teacher argument / τ, so pass what should be softened.
        teacher_input = p_d if self.soften == "probabilities" else p_d.log()
        keep = (step.labels != IGNORE_INDEX).float() if step.labels.dim() > 1 else None
        if self.variant == "reference":
            reg = reference_regulariser(student, teacher_input, self.temperature, self.multiplier, keep)
        else:
            reg = kd_kl(student, teacher_input, self.temperature, self.tau_squared, mask=keep)
        total = (1 - self.alpha) * ce + self.alpha * reg
        return {"loss": total, "ce": ce, "virtual_kd": reg}
