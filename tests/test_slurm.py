"""hardware=slurm against a real SLURM cluster: the single-node, CPU-only cluster that
scripts/slurm-up.sh starts on this machine (root and apt needed; skipped with the script's reason
elsewhere). The cluster is started once per test session.

Default suite: a 2-trial multirun submitted through submitit completes both trials (no GPU asked
of a CPU-only partition, job log paths printed). Slow: a trial requeued mid-training with
`scontrol requeue` resumes from its last.ckpt and ends with the metrics of an uninterrupted run;
a 2-task DDP job (srun-launched ranks).
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

ROOT = Path(__file__).resolve().parents[1]
SLURM_UP = ROOT / "scripts" / "slurm-up.sh"
PARTITION = "cpu"
TINY = ["task.train_size=160", "task.val_size=40", "trainer.enable_progress_bar=false",
        "hardware=slurm", f"hardware.partition={PARTITION}", "hardware.mem_gb=1", "hardware.cpus_per_task=1",
        "hardware.time_min=20"]


@pytest.fixture(scope="session")
def slurm_cluster():
    """Starts (or finds running) the local cluster; skips where it cannot be started."""
    if sys.platform != "linux":
        pytest.skip("the local SLURM cluster needs Linux")
    proc = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KDX_SLURM_PARTITION": PARTITION})
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"scripts/slurm-up.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return PARTITION


def kdx_multirun(*overrides, tmp_path: Path, timeout: int = 600, wait: bool = True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "KDX_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "kdx", "-m", *TINY, *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=tmp_path)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def results_under(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


def test_multirun_on_the_local_cluster(slurm_cluster, tmp_path):
    proc = kdx_multirun("method=finetune", "seed=0,1", "trainer.max_epochs=1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = results_under(tmp_path / "sweep")
    assert sorted(r["seed"] for r in results) == [0, 1]
    assert all(r["status"] == "completed" for r in results)
    # Each job's log files are printed at submission and exist.
    logs = re.findall(r"stdout (\S+)\n\s+stderr (\S+)", proc.stdout)
    assert len(logs) == 2 and all(Path(p).exists() for pair in logs for p in pair)
    # A CPU-only partition: no GPU requested; the resources asked for are the ones configured.
    script = next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    assert "--gpus" not in script and "gres" not in script
    assert f"--partition={PARTITION}" in script and "--mem=1GB" in script and "--cpus-per-task=1" in script
    # Job states came from squeue (no accounting here), without a sacct warning per poll.
    assert "Bypassing sacct error" not in proc.stdout + proc.stderr


def job_id_of(proc_output_lines: list[str]) -> str | None:
    for line in proc_output_lines:
        found = re.search(r"\[kdx\] submitted job (\S+)", line)
        if found:
            return found.group(1)
    return None


@pytest.mark.slow
def test_requeued_trial_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path, run_kdx):
    """`scontrol requeue` in the middle of a trial: the job restarts, resumes from last.ckpt (not from
    scratch) and ends with the same metrics as the same trial run without interruption."""
    recipe = ["method=finetune", "trainer.max_epochs=6", "task.train_size=600", "trainer.deterministic=true"]
    straight = run_kdx(*[o for o in TINY if not o.startswith("hardware")], *recipe, tmp_path=tmp_path / "straight")

    proc = kdx_multirun(*recipe, tmp_path=tmp_path, wait=False)
    lines, job_id = [], None
    sweep = tmp_path / "sweep"
    deadline = time.time() + 600
    while job_id is None and time.time() < deadline:
        lines.append(proc.stdout.readline())
        job_id = job_id_of(lines[-1:])
    assert job_id, "".join(lines)
    # Wait for the end of epoch 2 (its last.ckpt), then requeue the running job.
    while time.time() < deadline:
        ckpts = list(sweep.glob("*/checkpoints/last.ckpt"))
        done = list(sweep.glob("*/csv/metrics.csv"))
        if ckpts and done and done[0].read_text().count("\n") >= 3:
            break
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
    out = "".join(lines) + proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-4000:]
    [resumed] = results_under(sweep)
    job_log = next(sweep.rglob("*_log.out")).read_text()
    assert "[kdx] resuming from" in job_log, job_log[-3000:]
    assert resumed["status"] == "completed" and resumed["steps"] == straight["steps"]
    for name, value in straight["metrics"].items():
        assert resumed["metrics"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_ddp_job_with_two_tasks(slurm_cluster, tmp_path):
    """trainer.devices=2 on SLURM: one job with two srun tasks (Lightning's SLURM environment, gloo),
    rank 0 alone writes the results, which are the exact single-process evaluation."""
    proc = kdx_multirun("method=finetune", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp",
                        "trainer.max_epochs=2", "task.val_size=41", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [results] = results_under(tmp_path / "sweep")
    assert results["status"] == "completed"
    script = next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script
    assert len(list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))) == 2   # one log per task
    # Two ranks share the 160 training examples: 80 each, ceil(80/32) = 3 steps per epoch (5 alone).
    assert results["steps"] == 2 * 3
    # The validation that picked the best checkpoint saw each of the 41 samples once (no sampler
    # padding): its score is the exact single-process evaluation of that checkpoint.
    done = json.loads(next((tmp_path / "sweep").rglob("phase_done.json")).read_text())
    assert results["main_metric"]["value"] == pytest.approx(done["best_score"], abs=1e-6)


# ---- without a cluster ---------------------------------------------------------------------------
def test_gpus_are_requested_only_where_the_partition_has_them(monkeypatch):
    import kdx.slurm as slurm

    monkeypatch.setattr(slurm, "partition_has_gpus", lambda partition: partition == "gpu")
    assert slurm.gpus_per_node("auto", 2, "gpu") == 2
    assert slurm.gpus_per_node("auto", 2, "cpu") is None
    assert slurm.gpus_per_node(None, 2, "gpu") is None and slurm.gpus_per_node(4, 2, "cpu") == 4
    with pytest.raises(slurm.KdxError, match="not a number"):
        slurm.gpus_per_node("many", 2, "gpu")


def test_job_states_from_squeue_without_accounting(monkeypatch):
    """A cluster without accounting: states come from squeue; a registered job that left the queue
    (without a result file) counts as done, so the sweep reports it instead of waiting forever."""
    import kdx.slurm as slurm

    monkeypatch.setattr(slurm, "accounting_available", lambda: False)
    watcher = slurm.squeue_watcher_class()(delay_s=60)
    for job_id in ("12_0", "12_1", "13"):
        watcher.register_job(job_id)
    command = watcher._make_command()
    assert command[:3] == ["squeue", "-h", "-t"] and set(command[-1].split(",")) == {"12", "13"}
    info = watcher.read_info("12_0|RUNNING|vm\n12_1|PENDING|(None)\n")
    assert info["12_0"]["State"] == "RUNNING" and info["12_1"]["State"] == "PENDING"
    assert info["13"]["State"] == "LEFT_QUEUE"
    watcher._info_dict.update(info)
    assert not watcher.is_done("12_0", mode="cache") and watcher.is_done("13", mode="cache")


def test_no_srun_hint_for_a_local_trial_on_a_machine_with_slurm(monkeypatch):
    """On a login node (srun installed, not inside a job) Lightning advises prepending `srun`; a kdx
    trial started there is meant to run locally, so the hint is not shown."""
    import shutil
    import warnings

    from lightning.fabric.plugins.environments.slurm import SLURMEnvironment

    from kdx.run import quiet_lightning

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)

    def srun_hints(with_kdx_filters: bool) -> list:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if with_kdx_filters:
                quiet_lightning()
            SLURMEnvironment._validate_srun_used()
        return [w for w in caught if "srun" in str(w.message)]

    assert srun_hints(False), "Lightning gives the hint without kdx's filter (so the check below means something)"
    assert srun_hints(True) == []
