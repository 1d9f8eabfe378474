"""A sweep's grid without running it (kdx.plan), and where a sweep stands (kdx.status): a local
multirun killed midway and relaunched runs every trial exactly once, and the status counts match
before and after."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from kdx.launches import launched_grids, record_launch
from kdx.plan import plan
from kdx.status import main as status_main, trial_states
from kdx.trial import trial_key
from tests.conftest import compose_trial, resolved_job


def test_plan_keys_are_the_keys_the_trials_get():
    """A narrowed label-regularisation grid: 5 methods x 5 seeds, each key equal to the key of the
    trial composed on its own from the same overrides (as `python -m kdx` would)."""
    trials = plan(["+sweep=label_regularization", "task=glue/sst2", "model=bert-base_to_distilbert"])
    assert len(trials) == 25 and len({t.key for t in trials}) == 25
    assert Counter(t.method for t in trials) == {m: 5 for m in ("finetune", "kd", "label_smoothing", "tf_reg", "self_kd")}
    for trial in (trials[0], trials[7], trials[-1]):
        assert trial.key == trial_key(resolved_job(compose_trial(list(trial.overrides))))
        assert (trial.task, trial.model) == ("glue/sst2", "bert-base_to_distilbert")


@pytest.mark.slow
def test_plan_of_the_full_study_has_600_distinct_trials(capsys):
    from kdx.plan import main

    assert main(["+sweep=label_regularization"]) == 0
    out = capsys.readouterr().out
    assert "600 trials, 600 distinct trial keys" in out
    assert len({line.split()[0] for line in out.splitlines()[:-1]}) == 600


GRID = ["method=finetune", "seed=0,1,2", "task.train_size=400", "task.val_size=40", "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false", "hardware.torch_threads=1"]


def offline_env(tmp_path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "KDX_CACHE_DIR": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1"}


def launch(sweep, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "kdx", "-m", *GRID, f"hydra.sweep.dir={sweep}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=offline_env(tmp_path),
                            start_new_session=True)


def test_status_counts_completed_failed_and_not_started(run_kdx, tmp_path, capsys):
    """A sweep folder as `python -m kdx -m` leaves it: multirun.yaml (the command line), one trial
    folder per started trial named by its key. Seed 0 completed, seed 1 failed, seed 2 never started."""
    sweep = tmp_path / "sweep"
    overrides = ["method=finetune", "task.train_size=64", "task.val_size=32", "trainer.max_epochs=1"]
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": [*overrides, "seed=0,1,2"]}}}))
    planned = {t.seed: t.key for t in plan([*overrides, "seed=0,1,2"])}
    done = run_kdx(*overrides, "seed=0", f"hydra.run.dir={sweep / planned[0]}", tmp_path=tmp_path)
    assert done["trial_key"] == planned[0]
    (sweep / planned[1]).mkdir()
    (sweep / planned[1] / "results.json").write_text(json.dumps(
        {"status": "failed", "error": "CUDA out of memory\n  long traceback", "task": "synthetic",
         "method": "finetune", "seed": 1}))

    states = {s.key: s for s in trial_states(sweep)}
    assert {k: s.state for k, s in states.items()} == {planned[0]: "completed", planned[1]: "failed",
                                                        planned[2]: "not started"}
    assert status_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "3 trials in the grid" in out and "| finetune | synthetic | 1 | 1 | 0 | 0 | 1 |" in out
    assert f"{planned[1]}  synthetic · finetune · seed 1: CUDA out of memory" in out
    assert "long traceback" not in out
    # The report of the same folder lists the failed and the missing trial (nothing dropped silently).
    from kdx import report

    assert report.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s) without a completed result" in out
    assert f"{planned[1]}  synthetic · finetune · seed 1: failed (CUDA out of memory)" in out
    assert f"{planned[2]}  synthetic · finetune · seed 2: not started" in out


def test_status_expects_every_grid_launched_into_the_folder(tmp_path):
    """Two commands into one sweep folder: Hydra's multirun.yaml keeps only the last, the launch
    record (written by the RecordLaunch callback of a real `python -m kdx -m`) keeps both."""
    sweep = tmp_path / "sweep"
    overrides = ["method=finetune", "task.train_size=64", "task.val_size=32", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "hardware.torch_threads=1"]
    record_launch(sweep, [*overrides, "seed=1,2"])       # an earlier launch that never got to train
    done = subprocess.run([sys.executable, "-m", "kdx", "-m", *overrides, "seed=0", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, env=offline_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert launched_grids(sweep) == [[*overrides, "seed=1,2"], [*overrides, "seed=0"]]
    record_launch(sweep, [*overrides, "seed=0"])         # relaunching a command adds nothing
    assert len(launched_grids(sweep)) == 2
    planned = {t.seed: t.key for t in plan([*overrides, "seed=0,1,2"])}
    states = {s.key: s.state for s in trial_states(sweep)}
    assert states == {planned[0]: "completed", planned[1]: "not started", planned[2]: "not started"}


@pytest.mark.slow
def test_killed_multirun_relaunched_runs_each_trial_once(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    first = launch(sweep, tmp_path)
    deadline = time.time() + 300

    def second_trial_mid_training():
        unfinished = [p for p in sweep.glob("*/checkpoints/last.ckpt") if not (p.parents[1] / "results.json").exists()]
        return list(sweep.glob("*/results.json")) and unfinished

    # Kill the sweep while its second trial trains (after its first epoch's last.ckpt).
    while not second_trial_mid_training():
        assert first.poll() is None and time.time() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first_out = first.communicate()[0]

    before = Counter(s.state for s in trial_states(sweep, stale_min=0))
    assert before == {"completed": 1, "interrupted": 1, "not started": 1}
    assert status_main([str(sweep), "--stale-min", "0"]) == 0
    table = capsys.readouterr().out
    assert "3 trials in the grid" in table and "| finetune | synthetic | 1 | 0 | 0 | 1 | 1 |" in table

    second = launch(sweep, tmp_path)
    second_out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, second_out[-3000:]
    after = trial_states(sweep)
    assert Counter(s.state for s in after) == {"completed": 3}
    # Every trial ran to its end exactly once over both launches (each end prints "trial <key>").
    ends = Counter(re.findall(r"steps · trial (\w+)", first_out + second_out))
    assert ends == {s.key: 1 for s in after}
    assert "already completed" in second_out and "resuming from" in second_out
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert sorted(r["seed"] for r in results) == [0, 1, 2]


def test_status_finds_trials_nested_by_a_script(tmp_path):
    """A script that gives each trial its own hydra.run.dir (experiments/minilm_suite.sh:
    <out>/<task>/<method>/seed<N>) nests the trial folders; status finds them at any depth."""
    def trial(path, results=None, config=None):
        folder = tmp_path / path
        (folder / ".hydra").mkdir(parents=True)
        if config is not None:
            (folder / ".hydra" / "config.yaml").write_text(json.dumps(config))
        if results is not None:
            (folder / "results.json").write_text(json.dumps(results))
        (folder / "checkpoints").mkdir()   # a trial's own subfolders are not searched

    trial("sst2/kd/seed0", {"status": "completed", "task": "glue/sst2", "method": "kd", "seed": 0, "train_time_s": 60})
    trial("sst2/kd/seed1", {"status": "failed", "task": "glue/sst2", "method": "kd", "seed": 1, "error": "boom\nmore"})
    trial("mrpc/kd/seed0", config={"task": {"name": "glue/mrpc"}, "method": {"name": "kd"}, "seed": 0})
    (tmp_path / "notes").mkdir()   # a folder with no trial anywhere below
    states = {s.key: s for s in trial_states(tmp_path, stale_min=30)}
    assert set(states) == {"sst2/kd/seed0", "sst2/kd/seed1", "mrpc/kd/seed0"}
    assert states["sst2/kd/seed0"].state == "completed" and states["sst2/kd/seed1"].error == "boom"
    running = states["mrpc/kd/seed0"]
    assert (running.state, running.task, running.method, running.seed) == ("running", "glue/mrpc", "kd", 0)
