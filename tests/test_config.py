"""Every option of every config group composes and resolves; command-line names follow the contract."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import compose_trial, resolved_job, shipped_options
from kdx.__main__ import config_dir
from kdx.trial import trial_key

CONF = Path(config_dir())
GROUPS = ("task", "model", "method", "hardware", "logger")


def compose_cfg(*overrides: str):
    return compose_trial(list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in shipped_options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_cfg(f"{group}={option}")
    job = resolved_job(cfg)
    assert job[group] is not None
    for key in ("task", "model", "method", "trainer", "optim", "data", "seed"):
        assert key in job
    assert job.task.name and job.method.name and job.model.name


@pytest.mark.parametrize("option", shipped_options("model/student"))
def test_every_student_variant_composes_on_its_pair(option):
    job = resolved_job(compose_cfg("model=minilm", f"+model/student={option}"))
    assert job.model.name == "minilm" and job.model.student.init in ("truncated", "random")
    assert job.model.student.name_or_path == job.model.teacher.name_or_path


def test_groups_have_the_documented_defaults():
    cfg = compose_cfg()
    assert (cfg.task.name, cfg.model.name, cfg.method.name, cfg.hardware.name, cfg.logger.name) == (
        "synthetic", "tiny", "kd", "cpu", "csv")
    assert cfg.task.data_dir is None
    assert cfg.hydra.job.chdir is False


def test_trainer_keys_pass_through_and_data_dir_override():
    cfg = compose_cfg("trainer.max_steps=7", "+trainer.limit_val_batches=3", "task.data_dir=/somewhere", "seed=4")
    assert cfg.trainer.max_steps == 7 and cfg.trainer.limit_val_batches == 3
    assert cfg.task.data_dir == "/somewhere" and cfg.seed == 4


def test_trial_key_ignores_infrastructure_but_not_results():
    base = trial_key(compose_cfg())
    assert base == trial_key(compose_cfg())
    same = ["logger=none", "paths.output_root=/elsewhere", "trainer.enable_progress_bar=false",
            "task.data_dir=/data", "hardware=gpu", "teacher.cache=false"]
    for override in same:
        assert trial_key(compose_cfg(override)) == base, override
    for override in ["seed=1", "method=finetune", "optim.lr=0.5", "trainer.max_epochs=2", "method.alpha=0.9",
                     "teacher.cache_dtype=float16"]:
        assert trial_key(compose_cfg(override)) != base, override


def test_run_dir_is_named_by_the_trial_key():
    cfg = compose_cfg("seed=3")
    run_dir = cfg.hydra.run.dir
    assert run_dir.endswith(trial_key(cfg)) and "synthetic/kd" in run_dir


def test_unknown_group_option_lists_the_available_ones():
    proc = subprocess.run([sys.executable, "-m", "kdx", "method=no_such_method"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "no_such_method" in err and "Available options" in err
    for option in shipped_options("method"):
        assert option in err
    assert "Traceback" not in err


def test_conf_ships_in_the_wheel(tmp_path):
    """conf/ must work from an installed wheel, not only from the checkout."""
    import zipfile

    repo = CONF.parent
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(repo)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("kdx-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kdx/conf/config.yaml" in names
    for group in (*GROUPS, "robustness", "experiment"):
        for option in shipped_options(group):
            assert f"kdx/conf/{group}/{option}.yaml" in names
    assert "kdx/robustness/attack.py" in names and "kdx/evaluate.py" in names
