"""Plain fine-tuning: CE(y, softmax(z_S)) (MSE for regression). METHODS.md §1."""

from kdx.methods.base import Method, TrainStep
from kdx.methods.losses import hard_label_loss


class FineTune(Method):
    needs_teacher = False

    def __init__(self, name: str = "finetune"):
        super().__init__()
        self.name = name

    def losses(self, step: TrainStep):
        ce = hard_label_loss(step.student_logits(), step.labels, step.regression)
        return {"loss": ce, "ce": ce}
