"""The loss layer (kdx/losses.py): its properties, its formulas against plain Python, and golden
values pinned on fixed seeded tensors.

The pinned numbers in GOLDEN were computed once with the NumPy reference below (float64, written
out from the formulas, never calling kdx); `test_numpy_reference_reproduces_the_pinned_values`
keeps that derivation checked, the other golden tests hold kdx to the numbers.
"""

import math

import numpy as np
import pytest
import torch

from kdx.losses import (IGNORE_INDEX, annealed_mse, distillation_term, hard_label_loss, kd_kl, kd_mse,
                        kd_objective, masked_mean, soft_cross_entropy, span_loss, target_cross_entropy,
                        task_loss)
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, kl_by_hand, mse_by_hand, softmax


def tensors(*rows):
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


# ---- properties ---------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_identical_logits_give_zero_kl(t):
    torch.manual_seed(0)
    z = torch.randn(6, 4) * 3
    assert kd_kl(z, z.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    tokens = torch.randn(2, 5, 7)
    assert kd_kl(tokens, tokens.clone(), t, mask=torch.ones(2, 5)).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_is_positive_for_different_logits():
    s, t = tensors(STUDENT, TEACHER)
    assert kd_kl(s, t, 1.0).item() > 0


@pytest.mark.parametrize("t", [0.5, 2.0, 4.0])
def test_tau_squared_scales_the_kl_by_tau_squared(t):
    s, z = tensors(STUDENT, TEACHER)
    plain = kd_kl(s, z, t, tau_squared=False)
    assert kd_kl(s, z, t, tau_squared=True).item() == pytest.approx(t * t * plain.item(), rel=1e-6)


def test_mask_ignores_padded_tokens():
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    before = kd_kl(s, t, 2.0, mask=mask)
    s2, t2 = s.clone(), t.clone()
    s2[mask == 0] = torch.randn(3, 5) * 10      # whatever the model says at padding
    t2[mask == 0] = torch.randn(3, 5) * 10
    assert kd_kl(s2, t2, 2.0, mask=mask).item() == pytest.approx(before.item(), rel=1e-6)
    # ... and it is the mean over the 5 real tokens, not over all 8
    real = mask.bool()
    expected = 4.0 * kl_by_hand(s[real].tolist(), t[real].tolist(), 2.0)
    assert before.item() == pytest.approx(expected, rel=1e-5)


def test_masked_mean_counts_only_the_masked_positions():
    values = torch.tensor([[1.0, 2.0, 30.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(values, None).item() == pytest.approx(sum([1, 2, 30, 4, 50, 60]) / 6)


def test_ignore_index_labels_are_skipped_by_hard_label_loss():
    # token-level: (B=1, T=4, V=3) logits, the last token labelled IGNORE_INDEX
    logits = torch.tensor([STUDENT])
    got = hard_label_loss(logits, torch.tensor([[0, 1, 1, IGNORE_INDEX]]), regression=False)
    assert got.item() == pytest.approx(ce_by_hand(STUDENT[:3], [0, 1, 1]), rel=1e-6)


def test_ignore_index_labels_are_skipped_by_target_cross_entropy():
    targets = [[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]]
    labels = torch.tensor([[0, IGNORE_INDEX, 2, 1]])
    got = target_cross_entropy(torch.tensor([STUDENT]), torch.tensor([targets]), labels)
    kept = [0, 2, 3]
    expected = sum(-sum(q * math.log(p) for q, p in zip(targets[i], softmax(STUDENT[i]))) for i in kept) / 3
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ignore_index_positions_are_skipped_by_span_loss():
    logits = torch.tensor([[[0.5, -1.0], [2.0, 0.3], [9.0, -9.0]]])
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [IGNORE_INDEX, IGNORE_INDEX]]])

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (bce(0.5, 1) + bce(-1.0, 0) + bce(2.0, 0) + bce(0.3, 1)) / 4
    assert span_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert task_loss("span_prediction", logits, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_kd_objective_with_alpha_zero_is_ce_and_alpha_one_is_the_kd_term(t):
    s, z = tensors(STUDENT, TEACHER)
    y = torch.tensor(LABELS)
    at_zero = kd_objective(s, z, y, regression=False, alpha=0.0, temperature=t)
    at_one = kd_objective(s, z, y, regression=False, alpha=1.0, temperature=t)
    assert at_zero["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-6)
    assert at_one["loss"].item() == pytest.approx(t * t * kl_by_hand(STUDENT, TEACHER, t), rel=1e-5)
    assert at_zero["kd"].item() == pytest.approx(at_one["kd"].item())   # terms are unweighted


def test_kd_objective_regression_branch_is_mse():
    s, z, y = torch.tensor([[0.5], [2.0], [-1.0]]), torch.tensor([[1.0], [1.5], [0.0]]), torch.tensor([1.0, 1.0, -2.0])
    terms = kd_objective(s, z, y, regression=True, alpha=0.25, temperature=4.0)
    ce = ((0.5 - 1) ** 2 + (2 - 1) ** 2 + (-1 + 2) ** 2) / 3
    kd = ((0.5 - 1) ** 2 + (2 - 1.5) ** 2 + (-1 - 0) ** 2) / 3     # no temperature on regression
    assert terms["ce"].item() == pytest.approx(ce)
    assert terms["kd"].item() == pytest.approx(kd)
    assert terms["loss"].item() == pytest.approx(0.75 * ce + 0.25 * kd)
    assert distillation_term(s, z, True, 4.0).item() == pytest.approx(kd)
    assert task_loss("regression", s, y).item() == pytest.approx(ce)


# ---- formulas against plain Python -------------------------------------------------------------
@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_kl_matches_formula_with_tau_squared(t):
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), t, tau_squared=True)
    assert got.item() == pytest.approx(t * t * kl_by_hand(STUDENT, TEACHER, t), rel=1e-5)


def test_kd_kl_without_tau_squared():
    got = kd_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), 3.0, tau_squared=False)
    assert got.item() == pytest.approx(kl_by_hand(STUDENT, TEACHER, 3.0), rel=1e-5)


def test_kd_kl_token_level_mean_over_unmasked_tokens():
    # (B=1, T=4, V=3) with the last token padded: only the first three tokens count.
    got = kd_kl(torch.tensor([STUDENT]), torch.tensor([TEACHER]), 1.0, mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert got.item() == pytest.approx(kl_by_hand(STUDENT[:3], TEACHER[:3], 1.0), rel=1e-5)


def test_hard_label_loss_is_ce_or_mse():
    ce = hard_label_loss(torch.tensor(STUDENT), torch.tensor(LABELS), regression=False)
    assert ce.item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-5)
    mse = hard_label_loss(torch.tensor([[0.5], [2.0]]), torch.tensor([1.0, 1.0]), regression=True)
    assert mse.item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)


def test_kd_mse_is_mean_over_batch_and_classes():
    s, t = [[1.0, 2.0], [0.0, -1.0]], [[0.0, 2.0], [1.0, 1.0]]
    assert kd_mse(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(mse_by_hand(s, t))


def test_annealed_mse_scales_the_teacher_not_the_student():
    phi = 0.25
    got = annealed_mse(torch.tensor(STUDENT), torch.tensor(TEACHER), phi)
    scaled = [[phi * v for v in row] for row in TEACHER]
    assert got.item() == pytest.approx(mse_by_hand(STUDENT, scaled), rel=1e-6)


def test_soft_cross_entropy_is_ce_against_the_teacher_distribution():
    got = soft_cross_entropy(torch.tensor(STUDENT), torch.tensor(TEACHER))
    targets = [softmax(row) for row in TEACHER]
    expected = sum(-sum(q * math.log(p) for q, p in zip(tq, softmax(row)))
                   for row, tq in zip(STUDENT, targets)) / len(STUDENT)
    assert got.item() == pytest.approx(expected, rel=1e-6)


# ---- golden values -------------------------------------------------------------------------------
def fixed_tensors():
    torch.manual_seed(0)
    student = torch.randn(4, 5)
    teacher = torch.randn(4, 5) * 2
    labels = torch.randint(0, 5, (4,))
    span_logits = torch.randn(2, 6, 2)
    span_labels = (torch.rand(2, 6, 2) < 0.3).float()
    span_labels[1, 4:] = IGNORE_INDEX          # two padded positions of the second example
    return student, teacher, labels, span_logits, span_labels


TAU, ALPHA, PHI = 2.0, 0.3, 0.4
# Computed once with `numpy_reference` (float64) on `fixed_tensors()`.
GOLDEN = {
    "kd_kl": 1.2948024280688484,               # τ²·KL at τ = 2
    "kd_objective": 2.0226080524061123,        # 0.7·CE + 0.3·τ²·KL
    "annealed_mse": 1.7460214627811717,        # MSE(z_S, 0.4·z_T)
    "soft_cross_entropy": 2.0075609326488655,
    "span_loss": 0.8112719637369459,           # BCE over the 20 unpadded entries
}


def numpy_reference(student, teacher, labels, span_logits, span_labels) -> dict:
    s, t, y = student.double().numpy(), teacher.double().numpy(), labels.numpy()

    def log_softmax(z):
        shifted = z - z.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    log_t, log_s = log_softmax(t / TAU), log_softmax(s / TAU)
    kl = TAU ** 2 * (np.exp(log_t) * (log_t - log_s)).sum(-1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    x, target = span_logits.double().numpy(), span_labels.double().numpy()
    keep = target != IGNORE_INDEX
    x, target = x[keep], target[keep]
    bce = np.mean(np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x))))
    return {
        "kd_kl": kl,
        "kd_objective": (1 - ALPHA) * ce + ALPHA * kl,
        "annealed_mse": ((s - PHI * t) ** 2).mean(),
        "soft_cross_entropy": -(np.exp(log_softmax(t)) * log_softmax(s)).sum(-1).mean(),
        "span_loss": bce,
    }


def test_numpy_reference_reproduces_the_pinned_values():
    reference = numpy_reference(*fixed_tensors())
    for name, value in GOLDEN.items():
        assert reference[name] == pytest.approx(value, rel=1e-12), name


def test_losses_match_the_pinned_values():
    student, teacher, labels, span_logits, span_labels = fixed_tensors()
    got = {
        "kd_kl": kd_kl(student, teacher, TAU),
        "kd_objective": kd_objective(student, teacher, labels, False, ALPHA, TAU)["loss"],
        "annealed_mse": annealed_mse(student, teacher, PHI),
        "soft_cross_entropy": soft_cross_entropy(student, teacher),
        "span_loss": span_loss(span_logits, span_labels),
    }
    for name, value in GOLDEN.items():
        assert got[name].item() == pytest.approx(value, rel=1e-5), name
