"""Self-KD (Kobyzev et al., EACL 2023 study), docs/methods.md §1: vanilla KD

    L = (1 − α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ))

whose teacher is a fine-tuned, frozen copy of the *student's* architecture (same spec, same
init): `learns_from = "self"`, which the teacher store fine-tunes once under a key of its own.
"""

from kdx.knobs import Positive, Weight
from kdx.methods.kd import KD


class SelfKD(KD):
    learns_from = "self"

    def __init__(self, name: str = "self_kd", alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True):
        super().__init__(name=name, alpha=alpha, temperature=temperature, tau_squared=tau_squared)
