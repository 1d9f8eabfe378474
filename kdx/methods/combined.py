"""Combined-KD (Li et al., Findings of EMNLP 2021), METHODS.md §5: MATE-KD's adversarial
augmentation with Annealing-KD's two-phase schedule, all on raw logits.

    generator steps (10 of 110):   max_G  MSE(S(x̃), T(x̃))
    phase 1 student steps:         ½·[ MSE(S(x̃), Φ·T(x̃)) + MSE(S(x), Φ·T(x)) ],   Φ = temp/τ_max
    phase 2 student steps:         CE(y, S(x))   from the best phase-1 checkpoint (generator steps continue)

x̃, the generator and the alternation are MATE-KD's (kdx/methods/mate.py); Φ and the phase
split are Annealing-KD's (kdx/methods/annealing.py, kdx/methods/schedules.py).
"""

import torch

from kdx.methods.annealing import AnnealingKD
from kdx.methods.base import Phase, TrainStep
from kdx.methods.losses import hard_label_loss, kd_mse
from kdx.methods.mate import MateKD


class CombinedKD(MateKD):
    def __init__(self, name: str = "combined", tau_max: int = 10, phase1_epochs: int | None = None,
                 phase2_epochs: int | None = None, phase1_fraction: float = 0.75, **mate):
        super().__init__(name=name, **mate)
        # The annealing schedule and phase split, exactly as Annealing-KD computes them.
        self.annealing = AnnealingKD(name=name, tau_max=tau_max, phase1_epochs=phase1_epochs,
                                     phase2_epochs=phase2_epochs, phase1_fraction=phase1_fraction)

    def prepare(self, cfg=None, **kwargs):
        super().prepare(cfg=cfg, **kwargs)
        self.annealing.prepare(cfg=cfg)

    def phases(self) -> list[Phase]:
        return self.annealing.phases()

    def adversarial_divergence(self, student_adv, teacher_adv, step: TrainStep) -> torch.Tensor:
        return kd_mse(student_adv, teacher_adv)

    def student_losses(self, module, step: TrainStep) -> dict[str, torch.Tensor]:
        student = step.student_logits()
        if step.progress.phase > 0:
            ce = hard_label_loss(student, step.labels, step.regression)
            return {"loss": ce, "ce": ce}
        with torch.no_grad():
            mask, token_weights = self.sample_perturbation(step)
        student_adv, teacher_adv = self.perturbed_logits(module, step, mask, token_weights, teacher_grad=False)
        phi = self.annealing.scale(step)
        mse_adv = kd_mse(student_adv, phi * teacher_adv)
        mse_clean = kd_mse(student, phi * step.teacher_logits())
        return {"loss": (mse_adv + mse_clean) / 2, "annealed_mse_adv": mse_adv, "annealed_mse": mse_clean,
                "phi": student.new_tensor(phi)}
