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
    # trained with the student's own recipe, not the big teacher's
    cfg = OmegaConf.create({**OmegaConf.to_container(cfg), "optim": {"lr": 3e-4}, "trainer": {"max_epochs": 4},
                            "teacher_training": {"lr": 5e-5, "max_epochs": 2, "batch_size": 32}})
    training = self_teacher_config(cfg).teacher_training
    assert (training.lr, training.max_epochs, training.batch_size) == (3e-4, 4, 32)
    cfg.model.student.init = "truncated"   # from the pre-trained checkpoint: the spec says it all
    assert self_teacher_config(cfg).model.teacher.init == "truncated"
    cfg.model.student.truncate_from = "finetuned"   # would need the fine-tuned teacher first
    with pytest.raises(KdxError, match="truncate_from=finetuned"):
        self_teacher_config(cfg)


def test_self_kd_teacher_trains_on_the_students_rows_whatever_the_teachers_slice():
    """teacher_training.max_train_examples gives a big teacher more rows; the self-KD teacher is
    trained as the student is, on the task's own slice."""
    cfg = OmegaConf.create({"model": {"teacher": {"_target_": "big"}, "student": {"_target_": "small"}},
                            "task": {"max_train_examples": 100}, "optim": {"lr": 3e-4}, "trainer": {"max_epochs": 4},
                            "teacher_training": {"lr": 5e-5, "max_epochs": 2, "max_train_examples": None}})
    assert self_teacher_config(cfg).teacher_training.max_train_examples == 100
    assert cfg.teacher_training.max_train_examples is None
