"""The annealing family's schedules (kdx/methods/schedules.py) against the official loop and the
papers' formulas written out here."""

import pytest

from kdx.errors import KdxError
from kdx.methods.schedules import annealing_scale, annealing_temperature, continuation_phi, continuation_psi
from tests.methods.reference import official_annealing_temps


def test_annealing_temperature_glue_defaults():
    # τ_max = 7, E1 = 14: temp goes up by one every 2 epochs, starting at 1 (docs/methods.md §2).
    expected = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert [annealing_temperature(e, 14, 7) for e in range(14)] == expected
    assert [annealing_scale(e, 14, 7) for e in range(14)] == pytest.approx([t / 7 for t in expected])


@pytest.mark.parametrize("e1,tau_max", [(14, 7), (20, 7), (10, 7), (200, 10), (30, 10), (7, 7)])
def test_annealing_temperature_follows_official_loop(e1, tau_max):
    assert [annealing_temperature(e, e1, tau_max) for e in range(e1)] == official_annealing_temps(e1, tau_max)


def test_annealing_temperature_falls_back_to_steps_when_fewer_epochs_than_temperatures():
    # E1 = 3 < τ_max = 7, 70 steps in the phase: each temperature holds 10 steps.
    temps = [annealing_temperature(0, 3, 7, step=s, total_steps=70) for s in (0, 9, 10, 35, 59, 60, 69)]
    assert temps == [1, 1, 2, 4, 6, 7, 7]
    with pytest.raises(KdxError):
        annealing_temperature(0, 3, 7)


def test_continuation_phi_steps_down_every_n_over_tmax_epochs():
    # NLU: T_max = 10, n = 30 epochs: T_i = 10, 10, 10, 9, 9, 9, ..., φ = 1 - (T_i - 1)/T_max.
    for epoch in range(30):
        t_i = max(1, 10 - epoch // 3)
        assert continuation_phi(epoch, 30, 10) == pytest.approx(1 - (t_i - 1) / 10)


def test_continuation_psi_nlu_and_cv_ramps():
    # Paper epochs are 1-based: ψ(i) = i/40 for i = 1..20, then 1 (NLU).
    for i in range(1, 31):
        assert continuation_psi(i - 1) == pytest.approx(i / 40 if i <= 20 else 1.0)
    # CV: ψ(i) = i/150 up to 150, then 1.
    for i in (1, 75, 150, 151, 200):
        assert continuation_psi(i - 1, ramp_epochs=150, slope=1 / 150) == pytest.approx(min(1.0, i / 150))


def test_continuation_psi_step():
    assert [continuation_psi(e, kind="step", step_epoch=3) for e in range(5)] == [0, 0, 0, 1, 1]
    with pytest.raises(KdxError):
        continuation_psi(0, kind="step")
    with pytest.raises(KdxError):
        continuation_psi(0, kind="cosine")
