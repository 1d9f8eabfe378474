"""Teacher-assistant KD (Mirzadeh et al., AAAI 2020), the baseline of Annealing-KD and
Continuation-KD (docs/methods.md §3): teacher → assistant → student, each step vanilla KD

    L = (1 − α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_A/τ) ‖ σ(z_S/τ)).

`learns_from = "assistant"`: the teacher store distils `model.assistant` (a model spec sized between
teacher and student, with its own `init`) from the fine-tuned teacher with this same loss and the
student's training recipe (`assistant_epochs` epochs), once, keyed by teacher + assistant + recipe;
the student then learns from the frozen assistant. `teacher_metrics` in results.json are the
assistant's.
"""

from kdx.knobs import Count, Positive, Weight
from kdx.methods.kd import KD


class TAKD(KD):
    learns_from = "assistant"

    def __init__(self, name: str = "takd", alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True, assistant_epochs: Count | None = None):
        super().__init__(name=name, alpha=alpha, temperature=temperature, tau_squared=tau_squared)
        self.assistant_epochs = assistant_epochs
