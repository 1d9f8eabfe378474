"""Backward-pass KD (Jafari et al., arXiv 2301.12006), docs/methods.md §6: auxiliary samples where the
student diverges most from the teacher, found by gradient ascent in the word-embedding space.

    x = word embeddings of the batch (each model's own table, one shared vocabulary)
    repeat k times:   g = ∇_x D(T(x), S(x)),    x ← x + η·g/‖g‖   (norm=l2)   or   x ← x + η·sign(g)
    optionally project x' to the nearest tokens (cosine or L2 in the embedding tables)
    L = (1−α)·CE(y, S(x)) + α·[KD(T(x), S(x)) + KD(T(x'), S(x'))]      (teacher labels on x')

Teacher and student embed tokens in tables of different widths, so x is the pair
(E_T[ids], E_S[ids]): the ascent moves both, ‖g‖ is the per-sample norm of the joint gradient,
and the projection scores every token by its summed similarity in both tables. Only content
tokens move ([CLS], [SEP], padding stay). The ascent uses `torch.autograd.grad` with respect to x
only, so it leaves no gradients in teacher or student parameters. [check] the paper's NLP
settings (η, k, continuous vs projected x'): knobs, defaults documented in conf/method/bpkd.yaml.
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F

from kdx.errors import KdxError
from kdx.knobs import Count, Fraction, Positive, Weight
from kdx.losses import distillation_term, hard_label_loss
from kdx.methods.base import Method, SetupContext, TrainStep
from kdx.methods.perturb import content_positions, embedding_table, special_token_ids
from kdx.models.hf import check_shared_vocabulary
from kdx.models.outputs import logits_of

NORMS = ("l2", "sign")
DIVERGENCES = ("mse", "kl")
PROJECTIONS = (None, "cosine", "l2")


def ascent_direction(grads: list[torch.Tensor], norm: str) -> list[torch.Tensor]:
    """g/‖g‖ with ‖g‖ the l2 norm of all of a sample's gradients together, or sign(g)."""
    if norm == "sign":
        return [g.sign() for g in grads]
    per_sample = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads)).clamp_min(1e-12)
    return [g / per_sample.view(-1, *([1] * (g.dim() - 1))) for g in grads]


def nearest_tokens(points: list[torch.Tensor], tables: list[torch.Tensor], how: str,
                   excluded: list[int]) -> torch.Tensor:
    """Per position, the token whose embeddings are closest to `points` in all tables together
    (sum of cosine similarities, or of squared L2 distances); `excluded` ids are never chosen."""
    score = 0
    for x, table in zip(points, tables):
        if how == "cosine":
            score = score + F.normalize(x, dim=-1) @ F.normalize(table, dim=-1).T
        else:  # −‖x − e‖² = 2x·e − ‖e‖² − ‖x‖² (the last term is the same for every token)
            score = score + 2 * x @ table.T - table.pow(2).sum(-1)
    score[..., excluded] = float("-inf")
    return score.argmax(-1)


class BackwardPassKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "bpkd", alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True, eta: Positive = 0.1, steps: Count = 1, norm: Literal[NORMS] = "l2",
                 divergence: Literal[DIVERGENCES] = "kl", ratio: Fraction = 1.0,
                 project_to_tokens: Literal[PROJECTIONS] = None):
        super().__init__()
        for key, value, allowed in (("norm", norm, NORMS), ("divergence", divergence, DIVERGENCES),
                                    ("project_to_tokens", project_to_tokens, PROJECTIONS)):
            if value not in allowed:
                raise KdxError(f"method.{key}={value!r} is not one of {list(allowed)}",
                               f"set method.{key} to one of {list(allowed)}")
        if steps < 1 or not 0 < ratio <= 1 or eta < 0:
            raise KdxError(f"method.steps={steps}, ratio={ratio}, eta={eta}: need steps >= 1, 0 < ratio <= 1, eta >= 0")
        self.name = name
        self.alpha, self.temperature, self.tau_squared = alpha, temperature, tau_squared
        self.eta, self.steps, self.norm, self.divergence = eta, int(steps), norm, divergence
        self.ratio, self.project_to_tokens = ratio, project_to_tokens
        self.special_ids: list[int] = []

    def setup(self, context: SetupContext) -> None:
        tokenizer = context.tokenizer
        if tokenizer is None:
            raise KdxError(f"method={self.name} perturbs word embeddings, so it needs a text task with a tokenizer",
                           "use a text task (e.g. task=synthetic or task=glue/sst2)")
        check_shared_vocabulary(self.name, {"teacher": context.teacher, "student": context.student}, tokenizer)
        # Plain references, not submodules: the trial owns both models.
        self.__dict__["teacher_model"], self.__dict__["student_model"] = context.teacher, context.student
        self.special_ids = special_token_ids(tokenizer)

    # ---- the divergences ------------------------------------------------------------------
    def kd_term(self, student_logits, teacher_logits, regression: bool) -> torch.Tensor:
        return distillation_term(student_logits, teacher_logits, regression, self.temperature, self.tau_squared)

    def ascent_objective(self, student_logits, teacher_logits, regression: bool) -> torch.Tensor:
        """D(T(x), S(x)) summed over samples (so each sample's gradient is its own)."""
        if self.divergence == "mse" or regression:
            return (student_logits - teacher_logits).pow(2).sum()
        log_s = F.log_softmax(student_logits / self.temperature, -1)
        log_t = F.log_softmax(teacher_logits / self.temperature, -1)
        return (log_t.exp() * (log_t - log_s)).sum()

    # ---- the auxiliary samples ------------------------------------------------------------
    def auxiliary_inputs(self, inputs: dict, regression: bool) -> tuple[dict, dict]:
        """(teacher inputs, student inputs) of x' for the examples in `inputs`."""
        teacher, student = self.teacher_model, self.student_model
        ids = inputs["input_ids"]
        movable = content_positions(ids, inputs.get("attention_mask"), self.special_ids).unsqueeze(-1)
        tables = [embedding_table(teacher).weight.detach(), embedding_table(student).weight.detach()]
        points = [F.embedding(ids, table) for table in tables]
        for _ in range(self.steps):
            points = [x.detach().requires_grad_(True) for x in points]
            with torch.enable_grad():
                z_t = logits_of(teacher, **{**inputs, "input_ids": None, "inputs_embeds": points[0]})
                z_s = logits_of(student, **{**inputs, "input_ids": None, "inputs_embeds": points[1]})
                grads = torch.autograd.grad(self.ascent_objective(z_s, z_t, regression), points)
            directions = ascent_direction([g * movable for g in grads], self.norm)
            points = [(x + self.eta * d).detach() for x, d in zip(points, directions)]
        if self.project_to_tokens:
            projected = nearest_tokens(points, tables, self.project_to_tokens, self.special_ids)
            tokens = {**inputs, "input_ids": torch.where(movable.squeeze(-1), projected, ids)}
            return tokens, tokens
        return ({**inputs, "input_ids": None, "inputs_embeds": points[0]},
                {**inputs, "input_ids": None, "inputs_embeds": points[1]})

    def losses(self, step: TrainStep):
        student, teacher = step.student_logits(), step.teacher_logits()
        ce = hard_label_loss(student, step.labels, step.regression)
        kd = self.kd_term(student, teacher, step.regression)
        count = math.ceil(self.ratio * step.labels.shape[0])
        subset = {k: v[:count] for k, v in step.inputs.items()}
        teacher_inputs, student_inputs = self.auxiliary_inputs(subset, step.regression)
        kd_aux = self.kd_term(step.student_forward(**student_inputs).logits,
                             step.teacher_forward(**teacher_inputs).logits,
                              step.regression)
        total = (1 - self.alpha) * ce + self.alpha * (kd + kd_aux)
        return {"loss": total, "ce": ce, "kd": kd, "kd_aux": kd_aux}
