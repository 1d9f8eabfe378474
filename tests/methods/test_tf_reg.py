"""Teacher-free KD (regularisation): KD from a hand-made virtual teacher p^d, against the formula."""

import math

import pytest

from kdx.errors import KdxError
from kdx.methods.tf_reg import TeacherFreeReg
from tests.methods.reference import (LABELS, STUDENT, TEACHER, ce_by_hand, kl_probs_by_hand, logits_step,
                                     softmax)


@pytest.mark.parametrize("soften", ["probabilities", "log_probabilities"])
def test_tf_reg_matches_formula(soften):
    a, alpha, tau, k = 0.9, 0.3, 4.0, 3
    virtual = [[a if c == y else (1 - a) / (k - 1) for c in range(k)] for y in LABELS]
    if soften == "probabilities":
        teacher_probs = [softmax(row, tau) for row in virtual]
    else:
        teacher_probs = [softmax([math.log(p) for p in row], tau) for row in virtual]
    reg = tau ** 2 * kl_probs_by_hand(STUDENT, teacher_probs, tau)
    ce = ce_by_hand(STUDENT, LABELS)
    method = TeacherFreeReg(correct_prob=a, alpha=alpha, temperature=tau, soften=soften)
    assert method.learns_from == "none"
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["virtual_kd"].item() == pytest.approx(reg, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * reg, rel=1e-5)


def test_tf_reg_log_probabilities_at_tau_one_is_the_virtual_teacher():
    virtual = [[0.99 if c == y else 0.005 for c in range(3)] for y in LABELS]
    method = TeacherFreeReg(alpha=1.0, temperature=1.0, soften="log_probabilities")
    got = method.losses(logits_step(STUDENT, TEACHER, LABELS))["virtual_kd"].item()
    assert got == pytest.approx(kl_probs_by_hand(STUDENT, virtual, 1.0), rel=1e-5)


def test_tf_reg_rejects_bad_knobs():
    with pytest.raises(KdxError):
        TeacherFreeReg(correct_prob=1.0)
    with pytest.raises(KdxError):
        TeacherFreeReg(soften="logits")
