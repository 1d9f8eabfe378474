"""logger=wandb follows the W&B conventions: one offline run per trial in the trial folder, named by
the trial key, with the resolved config, always finished (also when the trial fails)."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert created["name"] == created["id"] == results["trial_key"]   # a resume continues this run
    assert created["resume"] == "allow"
    assert created["save_dir"] == str(tmp_path / "run")
    assert created["project"] == "kdx-tests" and created["job_type"] == "finetune"
    assert created["group"] == "synthetic"  # not a multirun: grouped by task
    assert {"synthetic", "finetune", "tiny", "init:random", "seed:0"} <= set(created["tags"])
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


# ---- a multirun's W&B runs, offline, and `wandb sync` --------------------------------------------
def offline_records(run_file: Path) -> list:
    """The protobuf records of an offline run's .wandb file (LevelDB-style log: a 7-byte file header,
    then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, records, pending = run_file.read_bytes(), 32 * 1024, [], b""
    position = 7
    while position + 7 <= len(data):
        left_in_block = block - position % block
        if left_in_block < 7:            # block trailer: padding
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4:position + 6], "little")
        kind = data[position + 6]
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def run_facts(run_dir: Path) -> dict:
    [run_file] = run_dir.glob("*.wandb")
    facts = {"summary": {}}
    for record in offline_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            facts.update(id=record.run.run_id, group=record.run.run_group, job_type=record.run.job_type,
                         tags=set(record.run.tags))
        elif kind == "summary":
            facts["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update})
    return facts


@pytest.mark.slow
def test_multirun_offline_runs_one_per_trial_and_resume_continues_the_same_run(tmp_path):
    """2 trials of a multirun → two W&B runs (id = trial key) in one group (the sweep); relaunching
    after a simulated preemption (one trial's results removed, its last.ckpt kept) adds no third run:
    the resumed trial logs into its own run again. `wandb sync --dry-run` sees the offline runs."""
    sweep = tmp_path / "my_study"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "KDX_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "kdx", "-m", *SMALL, "seed=0,1", "trainer.enable_progress_bar=false",
               f"hydra.sweep.dir={sweep}"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    trials = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(trials) == 2
    # Simulated preemption of seed 0 after its training: results gone, checkpoints kept.
    victim = next(t for t in trials if json.loads((t / "results.json").read_text())["seed"] == 0)
    (victim / "results.json").unlink()
    (victim / "checkpoints" / "phase_done.json").unlink()
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout

    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 3                                   # seed 0 twice (resumed), seed 1 once
    facts = [run_facts(r) for r in runs]
    keys = {json.loads((t / "results.json").read_text())["trial_key"]: t for t in trials}
    assert {f["id"] for f in facts} == set(keys)            # two runs: ids are the trial keys
    assert {f["group"] for f in facts} == {"my_study"}      # one group: the sweep
    assert {f["job_type"] for f in facts} == {"finetune"}
    for f in facts:
        results = json.loads((keys[f["id"]] / "results.json").read_text())
        assert {"synthetic", "finetune", "tiny", "init:random", f"seed:{results['seed']}"} <= f["tags"]
        assert f["summary"]["best/val/acc"] == pytest.approx(results["metrics"]["val/acc"])
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", *map(str, runs)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert sync.returncode == 0, sync.stderr
    assert "Would sync 3 run(s)" in sync.stdout + sync.stderr
