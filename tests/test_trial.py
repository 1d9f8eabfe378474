"""The trial driver end to end on a shortened default run: results contract, outputs, skip-if-done,
the teacher store, and clean failures."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdx.errors import KdxError

SMALL = ("task.train_size=300", "task.val_size=100", "trainer.max_epochs=2", "teacher_training.max_epochs=2",
         "model.teacher.hidden_size=32", "model.teacher.num_hidden_layers=1", "model.teacher.intermediate_size=64",
         "model.teacher.num_attention_heads=2", "model.student.hidden_size=16", "model.student.num_attention_heads=1",
         "model.student.intermediate_size=32")
CONTRACT_KEYS = {"status", "trial_key", "task", "method", "model", "seed", "main_metric", "metrics",
                 "teacher_metrics", "params", "train_time_s", "steps", "config", "versions"}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_default_run_writes_the_results_contract(run_kdx, tmp_path, shared_cache):
    results = run_kdx(*SMALL, tmp_path=tmp_path, cache_dir=shared_cache)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert CONTRACT_KEYS <= set(on_disk)
    assert on_disk["status"] == "completed"
    assert (on_disk["task"], on_disk["method"], on_disk["model"], on_disk["seed"]) == ("synthetic", "kd", "tiny", 0)
    assert on_disk["main_metric"]["name"] == "val/acc"
    assert 0.0 <= on_disk["main_metric"]["value"] <= 1.0
    assert on_disk["main_metric"]["value"] == on_disk["metrics"]["val/acc"]
    assert 0.0 <= on_disk["teacher_metrics"]["val/acc"] <= 1.0
    assert on_disk["params"]["teacher"] > on_disk["params"]["student"] > 0
    assert on_disk["steps"] == 2 * 10  # 300 examples / batch 32 -> 10 steps per epoch, 2 epochs
    assert on_disk["config"]["method"]["name"] == "kd"
    assert set(on_disk["versions"]) == {"kdx", "torch", "transformers", "lightning"}
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "last.ckpt").exists() and list(ckpts.glob("best-*.ckpt"))
    # every loss term is logged unweighted under its own name, with the total
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        columns = next(csv.reader(f))
    assert {"train/loss", "train/ce", "train/kd", "val/acc"} <= set(columns)


def test_second_run_skips_a_completed_trial(run_kdx, tmp_path, shared_cache, capsys):
    first = run_kdx(*SMALL, tmp_path=tmp_path, cache_dir=shared_cache)
    results_file = tmp_path / "run" / "results.json"
    stamp = results_file.stat().st_mtime_ns
    capsys.readouterr()
    second = run_kdx(*SMALL, tmp_path=tmp_path, cache_dir=shared_cache)
    assert "already completed" in capsys.readouterr().out
    assert second == json.loads(json.dumps(first))
    assert results_file.stat().st_mtime_ns == stamp


def test_teacher_is_fine_tuned_once_and_reused(run_kdx, tmp_path, shared_cache, capsys):
    run_kdx(*SMALL, tmp_path=tmp_path / "a", cache_dir=shared_cache)
    stores = list((shared_cache / "teachers").glob("synthetic-*/info.json"))
    assert len(stores) == 1
    info = json.loads(stores[0].read_text())
    assert info["trajectory"] == sorted(info["trajectory"]) and len(info["trajectory"]) == 2  # one per epoch
    capsys.readouterr()
    other = run_kdx(*SMALL, "method.alpha=0.9", tmp_path=tmp_path / "b", cache_dir=shared_cache)
    assert "fine-tuning the teacher" not in capsys.readouterr().out
    assert other["teacher_metrics"] == info["metrics"]
    assert list((shared_cache / "teachers").glob("synthetic-*/info.json")) == stores


def test_trajectory_saves_counts_epochs_and_every_n_steps_once():
    from omegaconf import OmegaConf

    from kdx.store import trajectory_saves

    def saves(**training):
        return trajectory_saves(OmegaConf.create({"max_epochs": 3, "max_steps": -1, **training}), 63)

    assert saves() == 3                                     # one per epoch
    assert saves(trajectory_every_n_steps=25) == 3 + 7      # 189 steps: 25, 50, ..., 175
    assert saves(trajectory_every_n_steps=21) == 9          # 21, 42, ..., 189: epoch ends 63, 126, 189 among them
    assert saves(max_steps=70, trajectory_every_n_steps=25) == 2 + 2   # capped inside epoch 2: ends 63, 70
    assert saves(max_steps=None) == 3
    assert saves(max_epochs=-1, max_steps=100, trajectory_every_n_steps=50) == 2 + 1   # 63, 100; 50, 100


def test_a_teacher_that_cannot_fit_on_the_disk_is_refused_before_training(run_kdx, tmp_path, monkeypatch):
    """The store estimates what a teacher's fine-tuning writes (trajectory, teacher.pt, two training
    checkpoints) and refuses up front, naming the sizes and the fixes, rather than failing mid-way."""
    import shutil

    import kdx.store

    free = shutil.disk_usage(tmp_path)._replace(free=10_000)
    monkeypatch.setattr(kdx.store.shutil, "disk_usage", lambda path: free)
    with pytest.raises(KdxError, match=r"(?s)needs about .* MB \(4 trajectory files.*trajectory_every_n_steps") as caught:
        run_kdx(*SMALL, "teacher_training.trajectory_every_n_steps=5", tmp_path=tmp_path)
    assert "0.0 MB are free" in str(caught.value)
    assert not list((tmp_path / "cache").glob("teachers/*/teacher.pt"))   # nothing was trained


def test_fine_tuned_teacher_checkpoint_given_directly(run_kdx, tmp_path, shared_cache):
    run_kdx(*SMALL, tmp_path=tmp_path / "a", cache_dir=shared_cache)
    teacher_pt = next((shared_cache / "teachers").glob("synthetic-*/teacher.pt"))
    results = run_kdx(*SMALL, f"model.teacher.checkpoint={teacher_pt}", tmp_path=tmp_path / "b",
                      cache_dir=tmp_path / "empty_cache")
    assert results["teacher_source"] == str(teacher_pt)
    assert not (tmp_path / "empty_cache" / "teachers").exists()


def test_same_seed_same_result(run_kdx, tmp_path, shared_cache):
    a = run_kdx(*SMALL, "method=finetune", tmp_path=tmp_path / "a", cache_dir=shared_cache)
    b = run_kdx(*SMALL, "method=finetune", tmp_path=tmp_path / "b", cache_dir=shared_cache)
    assert a["metrics"] == b["metrics"]


def test_method_needing_a_teacher_with_a_pair_without_one(run_kdx, tmp_path):
    with pytest.raises(KdxError, match="needs a teacher.*has none"):
        run_kdx(*SMALL, "model.teacher=null", tmp_path=tmp_path)
    failed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failed["status"] == "failed" and "needs a teacher" in failed["error"]


def test_bad_teacher_checkpoint_path(run_kdx, tmp_path):
    with pytest.raises(KdxError, match="does not exist"):
        run_kdx(*SMALL, f"model.teacher.checkpoint={tmp_path}/nope.pt", tmp_path=tmp_path)


def run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "kdx", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def test_cli_bad_input_exits_nonzero_with_a_message_not_a_traceback(tmp_path):
    proc = run_cli("model.teacher=null", f"paths.output_root={tmp_path}", f"paths.cache_dir={tmp_path}/c")
    assert proc.returncode == 2
    assert "kdx: error: method=kd needs a teacher" in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
    results = list(Path(tmp_path).rglob("results.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["status"] == "failed"


def test_parallel_trials_share_one_teacher(tmp_path):
    """Two trials started together fine-tune the teacher once, behind the store's file lock."""
    common = [*SMALL, "trainer.enable_progress_bar=false", f"paths.cache_dir={tmp_path}/cache",
              f"paths.output_root={tmp_path}/out"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "kdx", *common, f"seed={0}", f"method.alpha={a}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for a in (0.2, 0.8)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum("fine-tuning the teacher" in out for out in outputs) == 1
    assert len(list((tmp_path / "cache" / "teachers").glob("*/teacher.pt"))) == 1


def test_ddp_on_cpu_with_two_processes(tmp_path):
    """hardware=ddp with gloo: the teacher is fine-tuned once in a single process before the DDP fit
    (the second rank would otherwise never join it), and only rank 0 writes results.json."""
    proc = run_cli(*SMALL, "hardware=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                   "trainer.enable_progress_bar=false", f"paths.output_root={tmp_path}/out",
                   f"paths.cache_dir={tmp_path}/cache", env_extra={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results.json")]
    assert len(results) == 1 and results[0]["status"] == "completed"
    assert results[0]["steps"] == 2 * 5  # 300 examples over 2 ranks at batch 32: 5 steps per epoch
    assert proc.stdout.count("kdx · synthetic") == 1  # one summary, from rank 0
