"""Label smoothing (Kobyzev et al., EACL 2023 study), METHODS.md §1:

    q' = (1 − α)·q + α·u,   u = 1/K,   L = −Σ_c q'_c · log σ(z_S)_c   (mean over samples)

Regression tasks have no label distribution to smooth: there the loss is the plain MSE, as in
`finetune`. Token-level labels equal to -100 are ignored.
"""

import torch
import torch.nn.functional as F

from kdx.errors import KdxError
from kdx.methods.base import Method, TrainStep
from kdx.methods.losses import hard_label_loss

IGNORE_INDEX = -100


def soft_target_ce(student_logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−Σ_c target_c · log σ(z_S)_c, mean over the samples whose label is not IGNORE_INDEX."""
    log_p = F.log_softmax(student_logits, dim=-1).reshape(-1, student_logits.size(-1))
    keep = labels.reshape(-1) != IGNORE_INDEX
    per_sample = -(target.reshape(-1, target.size(-1)) * log_p).sum(-1)
    return per_sample[keep].mean()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.clamp_min(0), num_classes).float()


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    return (1 - alpha) * one_hot(labels, num_classes) + alpha / num_classes


class LabelSmoothing(Method):
    needs_teacher = False

    def __init__(self, name: str = "label_smoothing", alpha: float = 0.1):
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
        smoothed = soft_target_ce(student, target, step.labels)
        return {"loss": smoothed, "smoothed_ce": smoothed}
