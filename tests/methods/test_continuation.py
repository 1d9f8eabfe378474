"""Continuation-KD: ψ·CE + (1−ψ)·hinge loss against the formula, the `mean` distance, and the
special case m = 0, ψ a step, distance=mean that is exactly Annealing-KD (losses and gradients)."""

import pytest
import torch

from kdx.errors import KdxError
from kdx.methods.annealing import AnnealingKD
from kdx.methods.continuation import ContinuationKD
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, logits_step, mse_by_hand


@pytest.mark.parametrize("margin", [0.0, 0.5, 3.0])
def test_continuation_loss_matches_formula(margin):
    epoch, n, t_max = 7, 30, 10
    phi = 1 - (max(1, t_max - epoch // 3) - 1) / t_max
    psi = (epoch + 1) / 40
    method = ContinuationKD(t_max=t_max, margin=margin)
    assert method.learns_from == "teacher"
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS, epoch=epoch, max_epochs=n))
    per_sample = [max(0.0, sum((s - phi * t) ** 2 for s, t in zip(rs, rt)) - margin * phi)
                  for rs, rt in zip(STUDENT, TEACHER)]
    cnt = sum(per_sample) / len(per_sample)
    ce = ce_by_hand(STUDENT, LABELS)
    assert terms["cnt"].item() == pytest.approx(cnt, rel=1e-6, abs=1e-9)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["phi"].item() == pytest.approx(phi) and terms["psi"].item() == pytest.approx(psi)
    assert terms["loss"].item() == pytest.approx(psi * ce + (1 - psi) * cnt, rel=1e-6)
    if margin == 3.0:
        assert 0.0 in per_sample  # the hinge is active for some sample


def test_continuation_mean_distance_divides_by_classes():
    method = ContinuationKD(margin=0.0, distance="mean")
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS, epoch=29, max_epochs=30))  # φ = 1
    assert terms["cnt"].item() == pytest.approx(mse_by_hand(STUDENT, TEACHER), rel=1e-6)


def test_continuation_with_zero_margin_and_step_psi_is_annealing():
    """Same batch, same weights: identical losses and gradients at chosen epochs of both phases."""
    e1, e2, tau_max, steps_per_epoch = 10, 3, 5, 4
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, teacher = torch.randn(8, 6), torch.randn(8, 3) * 3
    labels = [0, 1, 2, 1, 0, 2, 2, 1]
    annealing = AnnealingKD(tau_max=tau_max, phase1_epochs=e1, phase2_epochs=e2)
    continuation = ContinuationKD(t_max=tau_max, margin=0.0, distance="mean", anneal_epochs=e1,
                                  psi={"kind": "step", "step_epoch": e1})

    def loss_and_grad(method, epoch, phase, max_epochs):
        model.zero_grad()
        terms = method.losses(logits_step(model(x), teacher, labels, epoch=epoch, phase=phase, max_epochs=max_epochs,
                                          step=epoch * steps_per_epoch, total_steps=max_epochs * steps_per_epoch))
        terms["loss"].backward()
        return terms["loss"].detach(), [p.grad.clone() for p in model.parameters()]

    for epoch in (0, 1, 2, 5, 9, 10, 12):
        if epoch < e1:
            expected = loss_and_grad(annealing, epoch, 0, e1)
        else:
            expected = loss_and_grad(annealing, epoch - e1, 1, e2)
        got = loss_and_grad(continuation, epoch, 0, e1 + e2)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-8)
        for g, e in zip(got[1], expected[1]):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-8)


def test_continuation_rejects_bad_knobs():
    with pytest.raises(KdxError):
        ContinuationKD(distance="l1")
    with pytest.raises(KdxError):
        ContinuationKD(margin=-1)
    with pytest.raises(KdxError):
        ContinuationKD(psi={"kind": "step"})
