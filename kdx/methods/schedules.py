"""Schedules of the annealing family (docs/methods.md §2-3), as pure functions of training progress.

Nothing here keeps state: the value at an epoch/step depends only on that epoch/step and the
schedule's constants, so a run resumed from a checkpoint continues the schedule exactly.
Epochs are 0-based (as Lightning counts them) unless a docstring says otherwise.

Annealing-KD (official code, Efficient-NLP/Annealing_KD): an integer `temp` counts 1 … τ_max,
incremented at the start of epoch e when `e % (E1 // τ_max) == 0 and e > 0`, clamped at τ_max;
the teacher logits are scaled by `temp / τ_max` (= Φ(T) = 1 − (T−1)/τ_max with T = τ_max+1−temp).
Closed form: `temp(e) = min(τ_max, 1 + e // (E1 // τ_max))`.

Fallback when E1 < τ_max (the official code divides by zero there): the same staircase over the
phase's optimizer steps instead of its epochs, `temp = min(τ_max, 1 + step·τ_max // total_steps)`,
i.e. each temperature holds for an equal share of the phase's steps. It is also used when the
phase is bounded by steps only (no epoch count).

Continuation-KD: φ(T_i) = 1 − (T_i−1)/T_max with T_i stepping down from T_max every ⌊n/T_max⌋
epochs — the same staircase as Annealing-KD with τ_max = T_max and E1 = n, so φ is
`annealing_scale`. ψ(i) (1-based epoch i) is either the paper's ramp `min(1, i·slope)` for
i ≤ ramp_epochs and 1 after (NLU: slope 1/40, 20 epochs; CV: slope 1/150, 150 epochs), or a step
(0 before epoch k, 1 from epoch k on), which turns Continuation-KD into Annealing-KD.
"""

from kdx.errors import KdxError


def annealing_temperature(epoch: int, phase1_epochs: int | None, tau_max: int,
                          step: int | None = None, total_steps: int | None = None) -> int:
    """The official code's integer `temp` ∈ {1, …, τ_max} at 0-based `epoch` of phase 1.

    When `phase1_epochs // tau_max == 0` (fewer epochs than temperatures, or no epoch count),
    the staircase runs over `step` of `total_steps` instead (see the module docstring)."""
    if tau_max < 1:
        raise KdxError(f"tau_max={tau_max} must be a positive integer", "set method.tau_max to e.g. 7")
    interval = (phase1_epochs or 0) // tau_max
    if interval >= 1:
        return min(tau_max, 1 + epoch // interval)
    if step is None or total_steps is None or total_steps <= 0:
        raise KdxError(f"phase 1 has {phase1_epochs} epochs, fewer than tau_max={tau_max} temperatures, "
                       "and no step count to anneal over",
                       "give the phase at least tau_max epochs, or a step budget (trainer.max_steps)")
    return min(tau_max, 1 + (step * tau_max) // total_steps)


def annealing_scale(epoch: int, phase1_epochs: int | None, tau_max: int,
                    step: int | None = None, total_steps: int | None = None) -> float:
    """Φ = temp / τ_max: the factor on the teacher logits in Annealing-KD phase 1 (1/τ_max … 1)."""
    return annealing_temperature(epoch, phase1_epochs, tau_max, step, total_steps) / tau_max


def continuation_phi(epoch: int, n_epochs: int | None, t_max: int,
                     step: int | None = None, total_steps: int | None = None) -> float:
    """φ(T_i) = 1 − (T_i − 1)/T_max, T_i = max(1, T_max − epoch // ⌊n/T_max⌋) (same step fallback
    as Annealing-KD when n < T_max)."""
    return annealing_scale(epoch, n_epochs, t_max, step, total_steps)


def continuation_psi(epoch: int, kind: str = "ramp", ramp_epochs: int = 20, slope: float = 1 / 40,
                     step_epoch: int | None = None) -> float:
    """ψ at 0-based `epoch` (the paper's 1-based i = epoch + 1).

    - `ramp`: ψ(i) = min(1, i·slope) for i ≤ ramp_epochs, then 1 (NLU: 20 epochs of i/40).
    - `step`: ψ = 0 for 0-based epochs < step_epoch, then 1 (Annealing-KD as a special case)."""
    if kind == "ramp":
        i = epoch + 1
        return min(1.0, i * slope) if i <= ramp_epochs else 1.0
    if kind == "step":
        if step_epoch is None:
            raise KdxError("psi kind=step needs the epoch at which psi jumps to 1",
                           "set method.psi.step_epoch=K (0-based: CE-only from epoch K on)")
        return 0.0 if epoch < step_epoch else 1.0
    raise KdxError(f"method.psi.kind={kind!r} is not a psi schedule", "use psi.kind=ramp or psi.kind=step")
