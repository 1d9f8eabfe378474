"""Teacher-free KD (regularisation): KD from a hand-made virtual teacher p^d, against the formula."""

import math

import pytest
import torch

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
    method = TeacherFreeReg(correct_prob=a, alpha=alpha, temperature=tau, soften=soften, variant="paper")
    assert method.learns_from == "none"
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["virtual_kd"].item() == pytest.approx(reg, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * reg, rel=1e-5)


def test_tf_reg_log_probabilities_at_tau_one_is_the_virtual_teacher():
    virtual = [[0.99 if c == y else 0.005 for c in range(3)] for y in LABELS]
    method = TeacherFreeReg(alpha=1.0, temperature=1.0, soften="log_probabilities", variant="paper")
    got = method.losses(logits_step(STUDENT, TEACHER, LABELS))["virtual_kd"].item()
    assert got == pytest.approx(kl_probs_by_hand(STUDENT, virtual, 1.0), rel=1e-5)


def test_tf_reg_reference_variant_matches_the_authors_computation():
    """The reference code's loss: nn.KLDivLoss() (element-wise mean) of log σ(z_S) against
    σ(p^d/τ), times the multiplier; checked with torch's own KLDivLoss and by hand."""
    a, alpha, tau, k, m = 0.99, 0.1, 20.0, 3, 100.0
    virtual = [[a if c == y else (1 - a) / (k - 1) for c in range(k)] for y in LABELS]
    q = [softmax(row, tau) for row in virtual]
    by_hand = m * kl_probs_by_hand(STUDENT, q, 1.0) / k
    library = m * torch.nn.KLDivLoss()(torch.log_softmax(torch.tensor(STUDENT), -1), torch.tensor(q)).item()
    assert by_hand == pytest.approx(library, rel=1e-5)
    method = TeacherFreeReg(correct_prob=a, alpha=alpha, temperature=tau)
    assert method.variant == "reference"
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["virtual_kd"].item() == pytest.approx(by_hand, rel=1e-5)
    ce = ce_by_hand(STUDENT, LABELS)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * by_hand, rel=1e-5)
    # the two variants differ: at τ = 20 the paper's τ²·KL(q ‖ σ(z_S/τ)) is another number
    paper = TeacherFreeReg(correct_prob=a, alpha=alpha, temperature=tau, variant="paper")
    assert paper.losses(logits_step(STUDENT, TEACHER, LABELS))["virtual_kd"].item() == pytest.approx(
        tau ** 2 * kl_probs_by_hand(STUDENT, q, tau), rel=2e-4)   # float32 at τ = 20


def test_tf_reg_rejects_bad_knobs():
    with pytest.raises(KdxError):
        TeacherFreeReg(correct_prob=1.0)
    with pytest.raises(KdxError):
        TeacherFreeReg(soften="logits")
    with pytest.raises(KdxError):
        TeacherFreeReg(variant="code")
