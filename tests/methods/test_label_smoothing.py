"""Label smoothing: CE against q' = (1−α)·one_hot(y) + α/K, padded tokens ignored."""

import pytest
import torch

from kdx.methods.label_smoothing import LabelSmoothing
from tests.methods.reference import LABELS, STUDENT, TEACHER, logits_step, soft_ce_by_hand


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
def test_label_smoothing_matches_formula(alpha):
    k = 3
    targets = [[(1 - alpha) * (c == y) + alpha / k for c in range(k)] for y in LABELS]
    method = LabelSmoothing(alpha=alpha)
    assert method.learns_from == "none"
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["loss"].item() == pytest.approx(soft_ce_by_hand(STUDENT, targets), rel=1e-6)
    assert terms["smoothed_ce"].item() == pytest.approx(terms["loss"].item())


def test_label_smoothing_ignores_padded_tokens():
    # Token-level (B=1, T=4, V=3) with the last token's label -100.
    student = torch.tensor([STUDENT], requires_grad=True)
    step = logits_step(student, torch.tensor([TEACHER]), [[0, 1, 1, -100]], family="language_modeling")
    targets = [[0.9 * (c == y) + 0.1 / 3 for c in range(3)] for y in (0, 1, 1)]
    got = LabelSmoothing(alpha=0.1).losses(step)["loss"].item()
    assert got == pytest.approx(soft_ce_by_hand(STUDENT[:3], targets), rel=1e-6)


def test_label_smoothing_regression_is_mse():
    terms = LabelSmoothing(alpha=0.3).losses(logits_step([[0.5], [2.0]], [[0.0], [0.0]], [1.0, 1.0],
                                                         family="regression"))
    assert terms["loss"].item() == pytest.approx(((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2)
