"""Plain fine-tuning: the task's own loss — CE(y, σ(z_S)), MSE for regression, BCE on start/end
targets for span prediction (kdx.losses.task_loss). docs/methods.md §1."""

from kdx.losses import task_loss
from kdx.methods.base import Method, TrainStep


class FineTune(Method):
    learns_from = "none"
    handles_span_targets = True

    def __init__(self, name: str = "finetune"):
        super().__init__()
        self.name = name

    def losses(self, step: TrainStep):
        ce = task_loss(step.family, step.student_logits(), step.labels)
        return {"loss": ce, "ce": ce}
