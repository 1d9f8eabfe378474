"""Label smoothing (Kobyzev et al., EACL 2023 study), docs/methods.md §1:

    q' = (1 − α)·q + α·u,   u = 1/K,   L = −Σ_c q'_c · log σ(z_S)_c   (mean over samples)

Regression tasks have no label distribution to smooth: there the loss is the plain MSE, as in
`finetune`. Token-level labels equal to -100 are ignored.
"""

import torch
import torch.nn.functional as F

from kdx.errors import KdxError
from kdx.knobs import Weight
from kdx.losses import hard_label_loss, target_cross_entropy
from kdx.methods.base import Method, TrainStep


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.clamp_min(0), num_classes).float()


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    return (1 - alpha) * one_hot(labels, num_classes) + alpha / num_classes


class LabelSmoothing(Method):
    learns_from = "none"

    def __init__(self, name: str = "label_smoothing", alpha: Weight = 0.1):
        super().__init__()
        if not 0 <= alpha <= 1:
            raise KdxError(f"method.alpha={alpha} must lie in [0, 1]", "e.g. method.alpha=0.1")
        self.name, self.alpha = name, alpha

    def losses(self, step: TrainStep):
        student = step.student_logits()
        if step.regression:
            mse = hard_label_loss(student, step.labels, True)
            return {"loss": mse, "ce": mse}
        target = smoothed_targets(step.labels, student.size(-1), self.alpha)
        smoothed = target_cross_entropy(student, target, step.labels)
        return {"loss": smoothed, "smoothed_ce": smoothed}
