"""Vanilla KD: L = (1−α)·CE + α·τ²·KL against the formula written out in plain Python. Self-KD and
TAKD use the same loss from another source (a self-teacher, an assistant): checked here too."""

import pytest

from kdx.methods.kd import KD
from kdx.methods.self_kd import SelfKD
from kdx.methods.takd import TAKD
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, kl_by_hand, logits_step


@pytest.mark.parametrize("method_class, learns_from", [(KD, "teacher"), (SelfKD, "self"), (TAKD, "assistant")])
@pytest.mark.parametrize("alpha, t", [(0.3, 2.0), (0.5, 1.0), (0.9, 4.0)])
def test_kd_method_total_and_unweighted_terms(method_class, learns_from, alpha, t):
    method = method_class(alpha=alpha, temperature=t)
    assert method.learns_from == learns_from and method.needs_frozen_teacher
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    ce, kl = ce_by_hand(STUDENT, LABELS), t * t * kl_by_hand(STUDENT, TEACHER, t)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * kl, rel=1e-5)


def test_kd_without_tau_squared():
    terms = KD(alpha=1.0, temperature=3.0, tau_squared=False).losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["loss"].item() == pytest.approx(kl_by_hand(STUDENT, TEACHER, 3.0), rel=1e-5)


def test_kd_method_regression_uses_mse_terms():
    terms = KD(alpha=0.5).losses(logits_step([[0.5], [2.0]], [[1.0], [1.5]], [1.0, 1.0], family="regression"))
    ce = ((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2
    kd = ((0.5 - 1) ** 2 + (2 - 1.5) ** 2) / 2
    assert terms["ce"].item() == pytest.approx(ce)
    assert terms["kd"].item() == pytest.approx(kd)
    assert terms["loss"].item() == pytest.approx(0.5 * ce + 0.5 * kd)
