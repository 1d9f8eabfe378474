"""Plain fine-tuning: CE(y, σ(z_S)) (MSE for regression). docs/methods.md §1."""

from kdx.losses import hard_label_loss
from kdx.methods.base import Method, TrainStep


class FineTune(Method):
    learns_from = "none"

    def __init__(self, name: str = "finetune"):
        super().__init__()
        self.name = name

    def losses(self, step: TrainStep):
        ce = hard_label_loss(step.student_logits(), step.labels, step.regression)
        return {"loss": ce, "ce": ce}
