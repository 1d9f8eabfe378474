"""Vanilla KD (Hinton et al. 2015), docs/methods.md §0:

    L = (1-α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ))

For regression (STS-B) CE becomes MSE on the output and the KD term is MSE between outputs; for
span prediction (coreference) CE is BCE on the start/end targets and the KD term compares the
teacher's and the student's per-token start/end probabilities (kdx.losses.span_kd).
"""

from kdx.knobs import Positive, Weight
from kdx.losses import kd_objective
from kdx.methods.base import Method, TrainStep


class KD(Method):
    learns_from = "teacher"
    handles_span_targets = True

    def __init__(self, name: str = "kd", alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True):
        super().__init__()
        self.name = name
        self.alpha, self.temperature, self.tau_squared = alpha, temperature, tau_squared

    def losses(self, step: TrainStep):
        return kd_objective(step.student_logits(), step.teacher_logits(), step.labels, step.regression,
                            self.alpha, self.temperature, self.tau_squared, mask=step.token_mask,
                            family=step.family)
