"""Loss functions and the vanilla-KD / fine-tuning methods against formulas written out here."""

import math

import pytest
import torch

from kdx.methods.base import Progress, TrainStep
from kdx.methods.finetune import FineTune
from kdx.methods.kd import KD
from kdx.methods.losses import hard_label_loss, kd_kl, kd_mse


def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl_by_hand(student, teacher, t):
    """KL(softmax(z_T/t) || softmax(z_S/t)) averaged over rows, in plain Python."""
    values = []
    for s_row, t_row in zip(student, teacher):
        p, q = softmax(t_row, t), softmax(s_row, t)
        values.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    return sum(values) / len(values)


def ce_by_hand(student, labels):
    return sum(-math.log(softmax(row)[y]) for row, y in zip(student, labels)) / len(labels)


STUDENT = [[1.0, -0.5, 0.3], [0.2, 0.1, -1.2], [-0.7, 2.0, 0.4]]
TEACHER = [[2.5, -1.0, 0.0], [0.0, 1.5, -2.0], [-1.0, 3.0, 1.0]]
LABELS = [0, 1, 1]


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_kl_matches_formula_with_tau_squared(t):
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), t, tau_squared=True)
    assert got.item() == pytest.approx(t * t * kl_by_hand(STUDENT, TEACHER, t), rel=1e-5)


def test_kd_kl_without_tau_squared():
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), 3.0, tau_squared=False)
    assert got.item() == pytest.approx(kl_by_hand(STUDENT, TEACHER, 3.0), rel=1e-5)


def test_kd_kl_token_level_mean_over_unmasked_tokens():
    # (B=1, T=3, V=3) with the last token padded: only the first two tokens count.
    student = torch.tensor([STUDENT])
    teacher = torch.tensor([TEACHER])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    got = kd_kl(student, teacher, 1.0, mask=mask)
    assert got.item() == pytest.approx(kl_by_hand(STUDENT[:2], TEACHER[:2], 1.0), rel=1e-5)


def test_hard_label_loss_is_ce_or_mse():
    ce = hard_label_loss(torch.tensor(STUDENT), torch.tensor(LABELS), regression=False)
    assert ce.item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-5)
    mse = hard_label_loss(torch.tensor([[0.5], [2.0]]), torch.tensor([1.0, 1.0]), regression=True)
    assert mse.item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)


def test_kd_mse_is_mean_over_batch_and_classes():
    s, t = [[1.0, 2.0], [0.0, -1.0]], [[0.0, 2.0], [1.0, 1.0]]
    expected = sum((a - b) ** 2 for rs, rt in zip(s, t) for a, b in zip(rs, rt)) / 4
    assert kd_mse(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected)


def make_step(student_logits, teacher_logits, labels, regression=False):
    s, t = torch.tensor(student_logits, requires_grad=True), torch.tensor(teacher_logits)
    return TrainStep(batch={}, labels=torch.tensor(labels), regression=regression,
                     progress=Progress(epoch=0, step=0, max_epochs=1, total_steps=1),
                     student_forward=lambda **_: s, teacher_forward=lambda **_: t, inputs={})


def test_kd_method_total_and_unweighted_terms():
    alpha, t = 0.3, 2.0
    terms = KD(alpha=alpha, temperature=t).losses(make_step(STUDENT, TEACHER, LABELS))
    ce, kl = ce_by_hand(STUDENT, LABELS), t * t * kl_by_hand(STUDENT, TEACHER, t)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * kl, rel=1e-5)


def test_kd_method_regression_uses_mse_terms():
    terms = KD(alpha=0.5).losses(make_step([[0.5], [2.0]], [[1.0], [1.5]], [1.0, 1.0], regression=True))
    ce = ((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2
    kd = ((0.5 - 1) ** 2 + (2 - 1.5) ** 2) / 2
    assert terms["ce"].item() == pytest.approx(ce)
    assert terms["kd"].item() == pytest.approx(kd)
    assert terms["loss"].item() == pytest.approx(0.5 * ce + 0.5 * kd)


def test_finetune_is_plain_ce_and_needs_no_teacher():
    method = FineTune()
    assert not method.needs_teacher
    terms = method.losses(make_step(STUDENT, TEACHER, LABELS))
    assert terms["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-5)
