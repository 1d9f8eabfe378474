"""MATE-KD (Rashid et al., ACL 2021), docs/methods.md §5: adversarial text augmentation by a masked-LM
generator G, alternating generator and student steps.

    M ~ Bernoulli(0.3) on non-special tokens,   ŵ = ST-Gumbel-softmax(G(x with M masked)),  τ_g = 1
    x̃ (per model, own table E):  e' = M⊙(ŵ·E) + (1−M)⊙E[x]             fed as inputs_embeds
    div(S, T) = mean_batch[ −Σ_c σ(z_T)_c · log σ(z_S)_c ]               (MSE for regression)

    generator steps (10 of every 110 batches):  max_G  div(S(x̃), T(x̃))
    student steps  (100 of every 110 batches):  min_S  ⅓·CE(y, S(x)) + ⅓·div(S(x̃), T(x̃)) + ⅓·div(S(x), T(x))

Optimisation follows the official code by default (`student_optim`, overridable key by key, or
null for the run's own `optim.*`): the student trains with Adam, weight decay 0, linear warmup
(2,138 steps, their GLUE script) then linear decay, gradient clipping 5, and its LR schedule
advances on student steps only (it spans the phase's student steps). The generator has its own
AdamW (lr 5e-7, weight decay 0, linear decay over its own steps) and gradient clipping (5). It
belongs to the method, so it is checkpointed with the trial and stays out of the student's
optimizer. Combined-KD (kdx/methods/combined.py) reuses this loop with other objectives.
"""

from typing import Literal

import torch
from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError
from kdx.knobs import Count, NonNegative, NonNegativeInt, Positive, Probability
from kdx.losses import hard_label_loss, kd_mse, soft_cross_entropy
from kdx.methods.base import STUDENT, ExtraOptimizer, Method, Progress, SetupContext, TrainStep
from kdx.methods.perturb import (content_positions, perturbed_embeddings,
                                 sample_mask, special_token_ids, straight_through_gumbel)
from kdx.models.generator import masked_lm
from kdx.models.hf import check_shared_vocabulary
from kdx.models.outputs import logits_of

GENERATOR = "generator"


def mate_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """mean over the batch of −Σ_c σ(z_T)_c log σ(z_S)_c (temperature 1); MSE for regression."""
    if regression:
        return kd_mse(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits)


# The official code's student recipe (MATE-KD and Combined-KD): entries replace optim.* keys.
PAPER_STUDENT_OPTIM = {"name": "adam", "weight_decay": 0.0, "warmup_steps": 2138, "schedule": "linear",
                       "gradient_clip_val": 5.0}
GENERATOR_SCHEDULES = ("linear", "constant")


def is_generator_step(step: int, generator_steps: int, student_steps: int) -> bool:
    """Batches cycle through `generator_steps` generator updates, then `student_steps` student ones."""
    return step % (generator_steps + student_steps) < generator_steps


def generator_steps_in(batches: int, generator_steps: int, student_steps: int) -> int:
    """How many of the first `batches` batches are generator steps (closed form of the cycle)."""
    cycles, rest = divmod(batches, generator_steps + student_steps)
    return cycles * generator_steps + min(rest, generator_steps)


def linear_decay(total_steps: int):
    """LR multiplier 1 → 0 over `total_steps` steps."""
    return lambda step: max(0.0, 1.0 - step / max(1, total_steps))


class MateKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "mate", mask_probability: Probability = 0.3, gumbel_tau: Positive = 1.0,
                 generator_steps: NonNegativeInt = 10, student_steps: Count = 100, generator_lr: Positive = 5e-7,
                 generator_weight_decay: NonNegative = 0.0, generator_clip: Positive | None = 5.0,
                 generator: dict | None = None, generator_schedule: Literal[GENERATOR_SCHEDULES] = "linear",
                 student_optim: dict | None = PAPER_STUDENT_OPTIM):
        super().__init__()
        if generator_schedule not in GENERATOR_SCHEDULES:
            raise KdxError(f"method.generator_schedule={generator_schedule!r} is not one of {list(GENERATOR_SCHEDULES)}",
                           "use generator_schedule=linear (the official code) or constant")
        if not 0 < mask_probability <= 1:
            raise KdxError(f"method.mask_probability={mask_probability} must lie in (0, 1]", "MATE-KD uses 0.3")
        if generator_steps < 0 or student_steps < 1:
            raise KdxError(f"method.generator_steps={generator_steps}, student_steps={student_steps}: need "
                           "generator_steps >= 0 and student_steps >= 1", "MATE-KD uses 10 and 100")
        self.name = name
        self.mask_probability, self.gumbel_tau = mask_probability, gumbel_tau
        self.generator_steps, self.student_steps = int(generator_steps), int(student_steps)
        self.generator_lr, self.generator_weight_decay = generator_lr, generator_weight_decay
        self.generator_clip, self.generator_schedule = generator_clip, generator_schedule
        self.student_optim = OmegaConf.to_container(student_optim, resolve=True) if isinstance(
            student_optim, DictConfig) else (dict(student_optim) if student_optim is not None else None)
        self.generator_spec = OmegaConf.to_container(generator, resolve=True) if isinstance(
            generator, DictConfig) else dict(generator or {})
        self.generator = None              # a masked LM over the task's vocabulary, built in setup
        self.special_ids: list[int] = []
        self.mask_id: int | None = None

    # ---- setup ----------------------------------------------------------------------------
    def setup(self, context: SetupContext) -> None:
        tokenizer = context.tokenizer
        if tokenizer is None or tokenizer.mask_token_id is None:
            raise KdxError(f"method={self.name} masks tokens, so it needs a text task with a tokenizer "
                           "that has a mask token", "use a text task and a model pair with a BERT/RoBERTa-style tokenizer")
        self.generator = masked_lm(len(tokenizer), self.generator_spec.get("name_or_path"),
                                   self.generator_spec.get("arch"))
        check_shared_vocabulary(self.name, {"teacher": context.teacher, "student": context.student,
                                            "generator": self.generator}, tokenizer)
        self.special_ids = special_token_ids(tokenizer)
        self.mask_id = int(tokenizer.mask_token_id)
        # Plain references, not submodules: the trial owns both models (their embedding tables
        # perturb the input; the teacher is differentiated through on generator steps).
        self.__dict__["student_model"], self.__dict__["teacher_model"] = context.student, context.teacher

    def extra_optimizers(self) -> list[ExtraOptimizer]:
        schedule = None
        if self.generator_schedule == "linear":
            schedule = lambda batches: linear_decay(  # noqa: E731
                generator_steps_in(batches, self.generator_steps, self.student_steps))
        return [ExtraOptimizer(GENERATOR, clip=self.generator_clip, schedule=schedule, make=lambda: torch.optim.AdamW(
            self.generator.parameters(), lr=self.generator_lr, weight_decay=self.generator_weight_decay))]

    def student_updates(self, batches: int) -> int:
        return batches - generator_steps_in(batches, self.generator_steps, self.student_steps)

    def optimizer_sequence(self, progress: Progress) -> list[str]:
        return [GENERATOR] if is_generator_step(progress.step, self.generator_steps, self.student_steps) else [STUDENT]

    # ---- the augmentation -----------------------------------------------------------------
    def sample_perturbation(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, ŵ): which positions are replaced, and the generator's one-hot replacement tokens."""
        input_ids = step.inputs["input_ids"]
        attention_mask = step.inputs.get("attention_mask")
        mask = sample_mask(content_positions(input_ids, attention_mask, self.special_ids), self.mask_probability)
        generator_logits = logits_of(self.generator, input_ids=input_ids.masked_fill(mask, self.mask_id),
                                     attention_mask=attention_mask)
        return mask, straight_through_gumbel(generator_logits, self.gumbel_tau)

    def perturbed_inputs(self, model, step: TrainStep, mask, token_weights) -> dict:
        embeds = perturbed_embeddings(model, step.inputs["input_ids"], token_weights, mask)
        return {"input_ids": None, "inputs_embeds": embeds}

    def perturbed_logits(self, step: TrainStep, mask, token_weights, teacher_grad: bool):
        """(z_S(x̃), z_T(x̃)); `teacher_grad`: let gradients reach ŵ through the (frozen) teacher."""
        student = step.student_logits(**self.perturbed_inputs(self.student_model, step, mask, token_weights))
        teacher_inputs = self.perturbed_inputs(self.teacher_model, step, mask, token_weights)
        if teacher_grad:
            teacher = logits_of(self.teacher_model, **{**step.inputs, **teacher_inputs})
        else:
            teacher = step.teacher_logits(**teacher_inputs)
        return student, teacher

    # ---- the objectives (Combined-KD overrides these) -------------------------------------
    def adversarial_divergence(self, student_adv, teacher_adv, step: TrainStep) -> torch.Tensor:
        """What the generator maximises."""
        return mate_divergence(student_adv, teacher_adv, step.regression)

    def losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Student steps: ⅓·CE + ⅓·div(S(x̃), T(x̃)) + ⅓·div(S(x), T(x))."""
        with torch.no_grad():
            mask, token_weights = self.sample_perturbation(step)
        student_adv, teacher_adv = self.perturbed_logits(step, mask, token_weights, teacher_grad=False)
        student, teacher = step.student_logits(), step.teacher_logits()
        ce = hard_label_loss(student, step.labels, step.regression)
        div_adv = mate_divergence(student_adv, teacher_adv, step.regression)
        div_clean = mate_divergence(student, teacher, step.regression)
        return {"loss": (ce + div_adv + div_clean) / 3, "ce": ce, "div_adv": div_adv, "div": div_clean}

    def extra_losses(self, name: str, step: TrainStep) -> dict[str, torch.Tensor]:
        """Generator steps: maximise the adversarial divergence (gradients reach ŵ through both models)."""
        mask, token_weights = self.sample_perturbation(step)
        student_adv, teacher_adv = self.perturbed_logits(step, mask, token_weights, teacher_grad=True)
        divergence = self.adversarial_divergence(student_adv, teacher_adv, step)
        return {"loss": -divergence, "generator_loss": -divergence, "generator_div": divergence}
