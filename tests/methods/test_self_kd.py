"""Self-KD: vanilla KD's loss, from a teacher that is the student's own spec fine-tuned
(kdx.store.self_teacher_config)."""

import pytest
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.store import self_teacher_config


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
