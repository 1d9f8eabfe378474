"""Vanilla KD (Hinton et al. 2015), METHODS.md §0:

    L = (1-α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ))

For regression (STS-B) CE becomes MSE on the output and the KD term is MSE between outputs.
"""

from kdx.methods.base import Method, TrainStep
from kdx.methods.losses import hard_label_loss, kd_kl, kd_mse


class KD(Method):
    needs_teacher = True

    def __init__(self, name: str = "kd", alpha: float = 0.5, temperature: float = 2.0,
                 tau_squared: bool = True):
        super().__init__()
        self.name = name
        self.alpha, self.temperature, self.tau_squared = alpha, temperature, tau_squared

    def losses(self, step: TrainStep):
        student = step.student_logits()
        teacher = step.teacher_logits()
        ce = hard_label_loss(student, step.labels, step.regression)
        if step.regression:
            distill = kd_mse(student, teacher)
        else:
            distill = kd_kl(student, teacher, self.temperature, self.tau_squared)
        total = (1 - self.alpha) * ce + self.alpha * distill
        return {"loss": total, "ce": ce, "kd": distill}
