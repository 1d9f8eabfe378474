"""Combined-KD (Li et al., Findings of EMNLP 2021), docs/methods.md §5: MATE-KD's adversarial
augmentation with Annealing-KD's two-phase schedule, all on raw logits.

    generator steps (10 of 110):   max_G  MSE(S(x̃), T(x̃))
    phase 1 student steps:         ½·[ MSE(S(x̃), Φ·T(x̃)) + MSE(S(x), Φ·T(x)) ],   Φ = temp/τ_max
    phase 2 student steps:         CE(y, S(x))   from the best phase-1 checkpoint (generator steps continue)

x̃, the generator, the alternation and the optimiser recipe are MATE-KD's (kdx/methods/mate.py); Φ and the phase
split are Annealing-KD's (kdx/methods/annealing.py, kdx/methods/schedules.py).
"""

from typing import Literal

import torch

from kdx.knobs import Count, NonNegative, NonNegativeInt, OpenFraction, Positive, Probability
from kdx.losses import annealed_mse, hard_label_loss, kd_mse
from kdx.methods.annealing import annealing_phases, check_phase1_fraction, phase1_scale, schedule_terms
from kdx.methods.base import Budget, Phase, TrainStep
from kdx.methods.mate import GENERATOR_SCHEDULES, PAPER_STUDENT_OPTIM, MateKD


class CombinedKD(MateKD):
    def __init__(self, name: str = "combined", tau_max: Count = 10, phase1_epochs: Count | None = None,
                 phase2_epochs: Count | None = None, phase1_fraction: OpenFraction = 0.75,
                 mask_probability: Probability = 0.3, gumbel_tau: Positive = 1.0, generator_steps: NonNegativeInt = 10,
                 student_steps: Count = 100, generator_lr: Positive = 5e-7, generator_weight_decay: NonNegative = 0.0,
                 generator_clip: Positive | None = 5.0, generator: dict | None = None,
                 generator_schedule: Literal[GENERATOR_SCHEDULES] = "linear",
                 student_optim: dict | None = PAPER_STUDENT_OPTIM):
        super().__init__(name=name, mask_probability=mask_probability, gumbel_tau=gumbel_tau,
                         generator_steps=generator_steps, student_steps=student_steps, generator_lr=generator_lr,
                         generator_weight_decay=generator_weight_decay, generator_clip=generator_clip,
                         generator=generator, generator_schedule=generator_schedule, student_optim=student_optim)
        check_phase1_fraction(phase1_fraction)
        self.tau_max = int(tau_max)
        self.phase1_epochs, self.phase2_epochs, self.phase1_fraction = phase1_epochs, phase2_epochs, phase1_fraction

    def phases(self, budget: Budget) -> list[Phase]:
        return annealing_phases(budget, self.phase1_epochs, self.phase2_epochs, self.phase1_fraction)

    def adversarial_divergence(self, student_adv, teacher_adv, step: TrainStep) -> torch.Tensor:
        return kd_mse(student_adv, teacher_adv)

    def losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        student = step.student_logits()
        if step.progress.phase > 0:
            ce = hard_label_loss(student, step.labels, step.regression)
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            mask, token_weights = self.sample_perturbation(step)
        student_adv, teacher_adv = self.perturbed_logits(step, mask, token_weights, teacher_grad=False)
        phi = phase1_scale(step.progress, self.tau_max)
        mse_adv = annealed_mse(student_adv, teacher_adv, phi)
        mse_clean = annealed_mse(student, step.teacher_logits(), phi)
        return {"loss": (mse_adv + mse_clean) / 2, "annealed_mse_adv": mse_adv, "annealed_mse": mse_clean,
                **schedule_terms(phi, self.tau_max, student)}
