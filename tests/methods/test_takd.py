"""TAKD: vanilla KD's loss from an assistant that the teacher store distils once
(kdx.store.obtain_assistant, keyed by teacher + assistant + recipe)."""

import pytest
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.methods.kd import KD
from kdx.methods.takd import TAKD
from kdx.store import assistant_dir, assistant_epochs, obtain_assistant


def trial_cfg(**method):
    return OmegaConf.create({
        "seed": 0, "task": {"name": "synthetic", "train_size": 96}, "data": {"batch_size": 32, "max_length": 32},
        "paths": {"cache_dir": "/cache"}, "trainer": {"max_epochs": 4, "max_steps": -1},
        "optim": {"name": "adamw", "lr": 1e-3}, "teacher_training": {"lr": 1e-3, "max_epochs": 1},
        "model": {"name": "tiny", "tokenizer": {"kind": "wordpiece"},
                  "teacher": {"_target_": "t", "hidden_size": 128}, "assistant": {"_target_": "a", "hidden_size": 48}},
        "method": {"_target_": "kdx.methods.takd.TAKD", "name": "takd", "alpha": 0.5, **method}})


def test_assistant_epochs_default_to_the_trainer_budget():
    assert assistant_epochs(trial_cfg(), TAKD()) == 4
    assert assistant_epochs(trial_cfg(), TAKD(assistant_epochs=2)) == 2


def test_assistant_is_keyed_by_teacher_assistant_and_recipe():
    base = trial_cfg()
    folder = assistant_dir(base, TAKD())
    assert folder == assistant_dir(trial_cfg(), TAKD())                 # same recipe, same folder
    assert "assistant" in folder.name and folder.parent.name == "teachers"
    assert assistant_dir(trial_cfg(alpha=0.9), TAKD()) != folder       # the method's loss
    assert assistant_dir(base, TAKD(assistant_epochs=2)) != folder     # its epochs
    bigger = trial_cfg()
    bigger.model.assistant.hidden_size = 64
    assert assistant_dir(bigger, TAKD()) != folder                     # the assistant spec
    other_teacher = trial_cfg()
    other_teacher.model.teacher.hidden_size = 256
    assert assistant_dir(other_teacher, TAKD()) != folder              # the teacher


def test_a_pair_without_an_assistant_is_refused():
    cfg = trial_cfg()
    del cfg.model["assistant"]
    with pytest.raises(KdxError, match="model.assistant"):
        obtain_assistant(cfg, KD(), teacher=None, spec=None, vocab_size=None, make_datamodule=None)
