"""Fine-tuning: plain CE on the gold labels (MSE for regression), no teacher."""

import pytest

from kdx.methods.finetune import FineTune
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, logits_step


def test_finetune_is_plain_ce_and_needs_no_teacher():
    method = FineTune()
    assert method.learns_from == "none" and not method.needs_frozen_teacher
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    assert terms["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(terms["loss"].item())


def test_finetune_never_reads_a_teacher():
    step = logits_step(STUDENT, TEACHER, LABELS)
    step.teacher_forward = None          # a trial without a teacher
    assert FineTune().losses(step)["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-5)


def test_finetune_regression_is_mse():
    terms = FineTune().losses(logits_step([[0.5], [2.0]], [[0.0], [0.0]], [1.0, -1.0], family="regression"))
    assert terms["loss"].item() == pytest.approx(((0.5 - 1) ** 2 + (2 + 1) ** 2) / 2)
