"""Self-KD: vanilla KD's loss, from a teacher that is the student's own spec fine-tuned
(kdx.store.self_teacher_config)."""

import pytest
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.methods.self_kd import SelfKD
from kdx.store import self_teacher_config
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, kl_by_hand, logits_step


def test_self_kd_uses_the_vanilla_kd_loss():
    alpha, tau = 0.4, 3.0
    method = SelfKD(alpha=alpha, temperature=tau)
    assert method.learns_from == "self" and method.needs_frozen_teacher
    terms = method.losses(logits_step(STUDENT, TEACHER, LABELS))
    kd = tau ** 2 * kl_by_hand(STUDENT, TEACHER, tau)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce_by_hand(STUDENT, LABELS) + alpha * kd, rel=1e-5)


def test_self_kd_teacher_is_the_student_spec():
    cfg = OmegaConf.create({"model": {"teacher": {"_target_": "big", "hidden_size": 128},
                                      "student": {"_target_": "small", "init": "random", "hidden_size": 32}}})
    derived = self_teacher_config(cfg)
    assert derived.model.teacher._target_ == "small" and derived.model.teacher.hidden_size == 32
    assert derived.model.teacher.init == "random"
    assert cfg.model.teacher._target_ == "big"  # the trial's own config is untouched
    cfg.model.student.init = "truncated"
    with pytest.raises(KdxError, match="truncated"):
        self_teacher_config(cfg)
