"""Token-level KD for generators (docs/methods.md §8): at every answer position, the student's
next-token distribution is pulled towards the teacher's by a chosen divergence,

    L = (1-α)·CE(y, σ(z_S)) + α·τ²·D(σ(z_T/τ), σ(z_S/τ)),

D = forward KL(p_T ‖ p_S) (mean-seeking, as vanilla KD), reverse KL(p_S ‖ p_T) (mode-seeking) or
the generalised Jensen–Shannon divergence with β (kdx.losses.generalised_jsd_per_item).

Token-level tasks average D over the positions that carry a label (generation: the answer tokens,
never the prompt or padding; language modelling: every real token); sequence-level tasks over
samples, so the method runs on any classification task too. Citation tokens (`[`, `1`, `]`) are
answer tokens like any other: the student learns the teacher's citation distribution with them.
"""

import torch

from kdx.errors import KdxError
from kdx.losses import DIVERGENCES, IGNORE_INDEX, hard_label_loss, token_divergence
from kdx.methods.base import Method, SetupContext, TrainStep

LABELLED_TOKEN_FAMILIES = ("language_modeling", "generation")


def labelled_positions(step: TrainStep) -> torch.Tensor | None:
    """The positions the divergence averages over: labelled tokens of language-model families,
    None (every sample) for sequence-level ones."""
    return step.labels != IGNORE_INDEX if step.family in LABELLED_TOKEN_FAMILIES else None


class TokenKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "token_kd", divergence: str = "forward", beta: float = 0.5,
                 alpha: float = 0.5, temperature: float = 1.0, tau_squared: bool = True):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise KdxError(f"method.divergence={divergence!r} is unknown", f"use one of {list(DIVERGENCES)}")
        if divergence == "jsd" and not 0 < beta < 1:
            raise KdxError(f"method.beta={beta} is outside (0, 1)",
                           "the generalised JSD needs 0 < beta < 1; its ends are divergence=forward / reverse")
        self.name, self.divergence, self.beta = name, divergence, beta
        self.alpha, self.temperature, self.tau_squared = alpha, temperature, tau_squared

    def setup(self, context: SetupContext) -> None:
        if context.spec.family in ("regression", "span_prediction"):
            raise KdxError(f"method={self.name} compares next-token or class distributions, which a "
                           f"{context.spec.family} task does not have",
                           "use method=kd (MSE to the outputs for regression, KD on the span scores)")

    def losses(self, step: TrainStep):
        student, teacher = step.student_logits(), step.teacher_logits()
        ce = hard_label_loss(student, step.labels, regression=False)
        divergence = token_divergence(student, teacher, self.divergence, self.temperature, self.beta,
                                      self.tau_squared, labelled_positions(step))
        return {"loss": (1 - self.alpha) * ce + self.alpha * divergence, "ce": ce, self.divergence: divergence}
