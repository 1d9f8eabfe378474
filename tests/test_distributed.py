"""DDP inside a multirun: the extra ranks run only their job's trial, each job leaves the process
as it found it, and metrics are exact (no evaluation sample counted twice)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from kdx import distributed
from tests.conftest import compose_trial


def test_rank_command_runs_only_the_current_trial(tmp_path):
    """The command Lightning's launcher gets for rank 1: `python -m kdx` with this job's overrides
    (no -m, no sweep), in this trial's folder, writing no second .hydra copy."""
    overrides = ["hardware=ddp", "trainer.devices=2", "method=kd", "seed=3"]
    cfg = compose_trial(overrides)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "abc")
        cfg.hydra.runtime.cwd = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    command, cwd = distributed.rank_command(1)
    assert command[:3] == [sys.executable, "-m", "kdx"]
    assert command[3:7] == overrides and "-m" not in command[3:] and "--multirun" not in command
    assert f'hydra.run.dir="{tmp_path / "sweep" / "abc"}"' in command
    assert "hydra.output_subdir=null" in command and cwd == str(tmp_path)


def test_ddp_job_restores_the_environment(monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "1234")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.ddp_job():
        os.environ.update(MASTER_PORT="5555", LOCAL_RANK="0", WORLD_SIZE="2")   # what a DDP launch leaves
    assert os.environ["MASTER_PORT"] == "1234"
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ


@pytest.mark.slow
def test_ddp_multirun_of_two_jobs(tmp_path):
    """`-m hardware=ddp trainer.devices=2 method=finetune,kd`: two jobs, each with its own two ranks;
    the sweep runs once (no rank re-runs it), two trial folders with results, exact metrics."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "KDX_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "kdx", "-m", "hardware=ddp", "trainer.accelerator=cpu",
                           "trainer.devices=2", "method=finetune,kd", "task.train_size=160", "task.val_size=41",
                           "trainer.max_epochs=2", "teacher_training.max_epochs=1",
                           "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("Launching 2 jobs") == 1          # the sweep was not re-run by a rank
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert sorted(r["method"] for r in results) == ["finetune", "kd"]
    assert len([p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    for r in results:
        assert r["status"] == "completed"
        assert r["steps"] == 2 * 3                       # 80 examples per rank: 3 batches of 32
        done = json.loads((Path(r["best_checkpoint"]).parent / "phase_done.json").read_text())
        # The in-training validation (41 samples over 2 ranks, none repeated) equals the exact
        # single-process evaluation of the same checkpoint.
        assert r["main_metric"]["value"] == pytest.approx(done["best_score"], abs=1e-6)
