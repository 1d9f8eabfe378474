"""logger=wandb follows the W&B conventions: one offline run per trial in the trial folder, named by
the trial key, with the resolved config, always finished (also when the trial fails)."""

import json

import pytest

wandb = pytest.importorskip("wandb")

SMALL = ("method=finetune", "logger=wandb", "task.train_size=120", "task.val_size=40", "trainer.max_epochs=1",
         "model.student.hidden_size=16", "logger.project=kdx-tests", "logger.mode=offline")


def test_offline_run_lives_in_the_trial_folder_and_is_finished(run_kdx, tmp_path, monkeypatch):
    import kdx.loggers

    created = {}
    real_logger = kdx.loggers.WandbLogger

    def recording_logger(**kwargs):
        created.update(kwargs)
        return real_logger(**kwargs)

    monkeypatch.setattr(kdx.loggers, "WandbLogger", recording_logger)
    results = run_kdx(*SMALL, tmp_path=tmp_path)
    assert results["status"] == "completed"
    assert wandb.run is None  # finished: the next multirun job cannot log into it
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1
    assert created["name"] == results["trial_key"]
    assert created["save_dir"] == str(tmp_path / "run")
    assert created["project"] == "kdx-tests" and created["job_type"] == "finetune"
    assert created["group"] == "synthetic"  # not a multirun: grouped by task
    assert {"synthetic", "finetune"} <= set(created["tags"])
    assert created["config"]["task"]["train_size"] == 120  # the resolved config
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()  # CSV kept next to W&B


def test_run_is_finished_with_exit_code_1_when_the_trial_fails(run_kdx, tmp_path, monkeypatch):
    from kdx import run as run_module
    from kdx.errors import KdxError

    monkeypatch.setenv("WANDB_SILENT", "true")
    finished = {}
    real_finish = wandb.finish

    def record_finish(exit_code=None, **kwargs):
        finished["exit_code"] = exit_code
        return real_finish(exit_code=exit_code, **kwargs)

    def failing_fit(cfg, out_dir, method, student, teacher, spec, datamodule, loggers, *rest):
        loggers.for_phase(None)[-1].experiment  # the W&B run exists when training starts
        raise KdxError("simulated failure during training")

    monkeypatch.setattr(wandb, "finish", record_finish)
    monkeypatch.setattr(run_module, "fit_phases", failing_fit)
    with pytest.raises(KdxError, match="simulated"):
        run_kdx(*SMALL, tmp_path=tmp_path)
    assert finished == {"exit_code": 1}
    assert wandb.run is None
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"
