"""EchoAtt (Rajabzadeh et al., 2024), docs/methods.md §7: the shared-attention student
(model.student.init=shared) learns from its unshared teacher in two stages.

    stage 1:  L = w_I·L_I + w_S·L_S + w_H·L_H      (paper: 0.25, 0.25, 0.5)
        L_I = MSE between student and teacher hidden states at the end of every block of
              consecutive shared layers (mean over the blocks, over real tokens)
        L_S = KL(p_T ‖ p_S) of the next-token distributions, τ = 1 (mean over real tokens)
        L_H = CE of the student against the teacher's argmax tokens
    stage 2:  next-token CE on the data, from the best stage-1 checkpoint

Budget: `stage1_epochs` / `stage2_epochs` when given; otherwise the trainer's epochs (and a step
budget, if any) are split by `stage1_fraction`. Each stage resumes from its own last.ckpt.
"""

import torch
import torch.nn.functional as F

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX, hard_label_loss, kd_kl, masked_mean
from kdx.methods.base import Budget, Method, Phase, SetupContext, TrainStep
from kdx.models.echoatt import decoder_layers, shared_blocks, shared_layers
from kdx.models.outputs import OutputRequest


def split(total: int, fraction: float, what: str) -> tuple[int, int]:
    """(stage 1, stage 2) shares of `total`, each at least 1."""
    if total < 2:
        raise KdxError(f"method=echoatt needs {what} >= 2 to give each of its two stages some, got {total}",
                       f"raise {what}, or set method.stage1_epochs and method.stage2_epochs")
    first = min(total - 1, max(1, round(fraction * total)))
    return first, total - first


def intermediate_loss(student_hidden, teacher_hidden, block_ends: list[int], mask) -> torch.Tensor:
    """Mean over the block ends of the per-token MSE of the layer outputs (hidden_states[end + 1])."""
    terms = [masked_mean(F.mse_loss(student_hidden[end + 1], teacher_hidden[end + 1], reduction="none").mean(-1), mask)
             for end in block_ends]
    return torch.stack(terms).mean()


def teacher_argmax_labels(teacher_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The teacher's most likely next token at every position; padding positions are not read."""
    tokens = teacher_logits.argmax(-1)
    return tokens if mask is None else tokens.masked_fill(mask == 0, IGNORE_INDEX)


class EchoAtt(Method):
    learns_from = "teacher"
    outputs = OutputRequest(hidden_states=True)

    def __init__(self, name: str = "echoatt", intermediate_weight: float = 0.25, soft_weight: float = 0.25,
                 hard_weight: float = 0.5, temperature: float = 1.0, stage1_fraction: float = 0.5,
                 stage1_epochs: int | None = None, stage2_epochs: int | None = None):
        super().__init__()
        if not 0 < stage1_fraction < 1:
            raise KdxError(f"method.stage1_fraction={stage1_fraction} must lie in (0, 1)", "e.g. 0.5")
        if (stage1_epochs is None) != (stage2_epochs is None):
            raise KdxError("method.stage1_epochs and method.stage2_epochs must be given together",
                           "set both, or neither (then trainer.max_epochs is split by stage1_fraction)")
        self.name = name
        self.weights = (float(intermediate_weight), float(soft_weight), float(hard_weight))
        self.temperature, self.stage1_fraction = float(temperature), float(stage1_fraction)
        self.stage_epochs = (stage1_epochs, stage2_epochs)
        self.block_ends: list[int] = []

    def setup(self, context: SetupContext) -> None:
        if context.spec.family != "language_modeling":
            raise KdxError(f"method=echoatt distils causal language models, but task {context.spec.name} is "
                           f"{context.spec.family}", "use a language-modelling task: task=lm/text, lm/sst2, ...")
        student_depth, teacher_depth = len(decoder_layers(context.student)), len(decoder_layers(context.teacher))
        if student_depth != teacher_depth:
            raise KdxError(f"method=echoatt: the student has {student_depth} layers, the teacher {teacher_depth}",
                           "use an EchoAtt pair (model=smollm2_echoatt, model=tiny_llama_echoatt): the student is "
                           "the teacher with shared attention (model.student.init=shared)")
        self.block_ends = [block[-1] for block in shared_blocks(shared_layers(context.student))]

    def phases(self, budget: Budget) -> list[Phase]:
        epochs = self.stage_epochs
        if epochs[0] is None and budget.max_epochs is not None and budget.max_epochs > 0:
            epochs = split(int(budget.max_epochs), self.stage1_fraction, "trainer.max_epochs")
        steps = (None, None)
        if budget.max_steps is not None and budget.max_steps > 0:
            steps = split(int(budget.max_steps), self.stage1_fraction, "trainer.max_steps")
        return [Phase("kd", max_epochs=epochs[0], max_steps=steps[0], restart_from_best=False),
                Phase("ce", max_epochs=epochs[1], max_steps=steps[1], restart_from_best=True)]

    def losses(self, step: TrainStep):
        if step.progress.phase > 0:
            ce = hard_label_loss(step.student_logits(), step.labels, regression=False)
            return {"loss": ce, "ce": ce}
        student, teacher = step.student(), step.teacher()
        mask = step.token_mask
        if self.block_ends:
            intermediate = intermediate_loss(student.hidden_states, teacher.hidden_states, self.block_ends, mask)
        else:   # nothing is shared: the hidden states agree by construction
            intermediate = student.logits.new_zeros(())
        soft = kd_kl(student.logits, teacher.logits, self.temperature, tau_squared=False, mask=mask)
        hard = hard_label_loss(student.logits, teacher_argmax_labels(teacher.logits, mask), regression=False)
        w_i, w_s, w_h = self.weights
        return {"loss": w_i * intermediate + w_s * soft + w_h * hard,
                "intermediate": intermediate, "soft": soft, "hard": hard}
