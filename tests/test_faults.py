"""Fault injection (issue 12): a 2-phase trial (Annealing-KD) is killed at chosen points — during the
teacher store's fine-tuning, mid-epoch in each phase, in the middle of a checkpoint write, between
the phases, by SIGTERM — or finds its checkpoint truncated, and is launched again: it must end
`completed` with exactly the metrics of an uninterrupted run. A NaN loss stops a trial as `failed`
naming the step and the term; a second launch of a running trial never trains in its folder.

The kills here are exceptions raised at those points in-process (what a crash leaves on disk is
the same: whatever was written before); tests/test_faults_slow.py kills real processes with
SIGKILL at random times.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

import kdx.checkpoints
import kdx.training
from kdx.errors import KdxError
from kdx.interrupt import TrialInterrupted
from kdx.lock import LOCK_FILE, TrialBusy, TrialLock
from kdx.methods.finetune import FineTune
from kdx.results import is_completed
from kdx.store import entry_is_intact
from tests.conftest import compose_trial, run_composed

ROOT = Path(__file__).resolve().parents[1]
# 96 examples / batch 32 = 3 steps per epoch; 3 epochs = phase 1 (anneal) 2 epochs + phase 2 (CE) 1.
TWO_PHASES = ("method=annealing", "method.tau_max=2", "trainer.max_epochs=3", "task.train_size=96",
              "task.val_size=32", "teacher_training.max_epochs=1", "model.teacher.hidden_size=32",
              "model.teacher.num_hidden_layers=1", "model.teacher.intermediate_size=64",
              "model.teacher.num_attention_heads=2")
STEPS_PER_EPOCH = 3
PHASE1 = "phase1-anneal"


class Killed(Exception):
    """Stands for the process dying at that point."""


def overrides(tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    return [f"hydra.run.dir={tmp_path / 'run'}", f"paths.output_root={tmp_path / 'outputs'}",
            f"paths.cache_dir={cache}", "trainer.enable_progress_bar=false", *TWO_PHASES, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, and the teacher store it filled (shared by the runs below)."""
    root = tmp_path_factory.mktemp("reference")
    cache = root / "cache"
    return run_composed(compose_trial(overrides(root, cache))), cache


def assert_same_result(results: dict, reference: dict) -> None:
    assert results["status"] == "completed"
    assert results["steps"] == reference["steps"] == 3 * STEPS_PER_EPOCH
    assert results["metrics"].keys() == reference["metrics"].keys()
    for name, value in reference["metrics"].items():
        assert results["metrics"][name] == pytest.approx(value, abs=1e-6), name


def crash_in_training(monkeypatch, should_crash) -> None:
    """Every Trainer kdx builds gets a callback that raises Killed when `should_crash(trainer,
    module)` says so, at the start of a batch."""
    original = kdx.training.make_trainer

    class Crash(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if should_crash(trainer, module):
                raise Killed(f"phase {module.phase} step {trainer.global_step}")

    def make_trainer(trainer_cfg, callbacks=(), logger=False, **kwargs):
        return original(trainer_cfg, callbacks=[*callbacks, Crash()], logger=logger, **kwargs)

    monkeypatch.setattr(kdx.training, "make_trainer", make_trainer)
    monkeypatch.setattr("kdx.store.make_trainer", make_trainer)


def crash_at_checkpoint_write(monkeypatch, which: int) -> None:
    """The `which`-th atomic write dies after writing half of its temporary file."""
    original = kdx.checkpoints.torch.save
    writes = []

    def half_then_die(obj, f, *args, **kwargs):
        writes.append(1)
        if len(writes) == which:
            import io

            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise Killed("in the middle of a checkpoint write")
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(kdx.checkpoints.torch, "save", half_then_die)


def crash_between_phases(monkeypatch) -> None:
    original = kdx.training.fit_phase

    def fit_phase(cfg, method, student, teacher, spec, datamodule, phase, index, *args, **kwargs):
        if index == 1:
            raise Killed("after phase 1 finished, before phase 2 started")
        return original(cfg, method, student, teacher, spec, datamodule, phase, index, *args, **kwargs)

    monkeypatch.setattr(kdx.training, "fit_phase", fit_phase)


KILL_POINTS = {
    "teacher store fine-tuning": lambda mp: crash_in_training(mp, lambda t, m: t.global_step == 2 and not t.ckpt_path
                                                              and m.method.name == "finetune"),
    "phase 1 mid-epoch": lambda mp: crash_in_training(mp, lambda t, m: m.phase == 0 and t.global_step == 4),
    "checkpoint write": lambda mp: crash_at_checkpoint_write(mp, which=3),
    "between phases": crash_between_phases,
    "phase 2 mid-epoch": lambda mp: crash_in_training(mp, lambda t, m: m.phase == 1 and t.global_step == 1),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_trial_resumes_to_the_uninterrupted_result(point, reference, tmp_path, monkeypatch):
    ref, ref_cache = reference
    # the teacher-store kill needs a store to fill; the others share the reference's teacher
    cache = tmp_path / "cache" if point == "teacher store fine-tuning" else ref_cache
    with monkeypatch.context() as patch:
        KILL_POINTS[point](patch)
        with pytest.raises(Killed):
            run_composed(compose_trial(overrides(tmp_path, cache)))
    run_dir = tmp_path / "run"
    assert not is_completed(run_dir, ref["trial_key"])
    assert not (run_dir / LOCK_FILE).exists()            # released on the way out
    results = run_composed(compose_trial(overrides(tmp_path, cache)))
    assert_same_result(results, ref)
    assert not list(run_dir.rglob(".*.tmp"))              # a cut-short write leaves nothing behind


def test_truncated_last_checkpoint_is_set_aside_and_the_phase_resumes(reference, tmp_path, monkeypatch, capsys):
    """The table's last row: a kill while last.ckpt was written by a non-atomic writer."""
    ref, cache = reference
    with monkeypatch.context() as patch:
        crash_in_training(patch, lambda t, m: m.phase == 0 and t.global_step == 4)
        with pytest.raises(Killed):
            run_composed(compose_trial(overrides(tmp_path, cache)))
    last = tmp_path / "run" / "checkpoints" / PHASE1 / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    capsys.readouterr()
    results = run_composed(compose_trial(overrides(tmp_path, cache)))
    out = capsys.readouterr().out
    assert "last.ckpt is damaged" in out and "resuming from" in out
    assert len(list(last.parent.glob("last.ckpt.damaged-*"))) == 1   # kept, not deleted
    assert_same_result(results, ref)


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_signal_marks_the_trial_interrupted_and_the_next_launch_resumes(signum, reference, tmp_path,
                                                                        monkeypatch):
    ref, cache = reference

    def send_signal(trainer, module):
        if module.phase == 1 and trainer.global_step == 1:
            os.kill(os.getpid(), signum)   # the handler only raises a flag: training stops after this batch
        return False

    with monkeypatch.context() as patch:
        crash_in_training(patch, send_signal)
        with pytest.raises(TrialInterrupted) as caught:
            run_composed(compose_trial(overrides(tmp_path, cache)))
    assert caught.value.signum == signum
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["status"] == "interrupted" and signal.Signals(signum).name in on_disk["error"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    assert_same_result(run_composed(compose_trial(overrides(tmp_path, cache))), ref)


def test_non_finite_loss_fails_the_trial_naming_step_and_term(run_kdx, tmp_path, monkeypatch):
    original = FineTune.losses

    def nan_at_step_2(self, step):
        terms = original(self, step)
        if step.progress.step == 2:
            terms["ce"] = terms["ce"] * float("nan")
            terms["loss"] = terms["ce"]
        return terms

    monkeypatch.setattr(FineTune, "losses", nan_at_step_2)
    with pytest.raises(KdxError) as caught:
        run_kdx("method=finetune", "task.train_size=96", "task.val_size=32", "trainer.max_epochs=2", tmp_path=tmp_path)
    message = str(caught.value)
    assert "train/ce = nan" in message and "at step 2" in message and "phase 1" in message
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == message


def test_a_non_finite_term_stops_the_trial_through_the_total_even_at_weight_zero():
    """Only the total is read each step; a nan or inf term reaches it whatever its weight (0·nan and
    0·inf are nan), and the error names the term, not the total."""
    import torch

    from kdx.distill import DistillationModule
    from kdx.tasks.base import TaskSpec

    module = DistillationModule(torch.nn.Linear(2, 2), FineTune(), TaskSpec(name="t", num_labels=2, metrics=["acc"], main_metric="acc"),
                                optim_cfg=None)
    ce = torch.tensor(0.7, requires_grad=True)
    module.check_finite({"loss": ce * 1.0, "ce": ce})   # finite: nothing happens
    for bad in (float("nan"), float("inf")):
        kd = torch.tensor(bad)
        with pytest.raises(KdxError, match=f"train/kd = {bad} at step 0"):
            module.check_finite({"loss": 1.0 * ce + 0.0 * kd, "ce": ce, "kd": kd})


# ---- one trial runs once ------------------------------------------------------------------------------
HOLDER = """
import sys, time
from kdx.lock import TrialLock
lock = TrialLock(sys.argv[1], heartbeat_s=0.2)
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the trial's lock (it imports only kdx.lock: starts in a blink)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


FAST = ("method=finetune", "task.train_size=64", "task.val_size=32", "trainer.max_epochs=1")


def test_second_launch_of_a_running_trial_exits_running_elsewhere(run_kdx, tmp_path):
    holder = hold_lock(tmp_path / "run", 60)
    try:
        with pytest.raises(TrialBusy) as caught:
            run_kdx(*FAST, "lock.on_busy=exit", tmp_path=tmp_path)
        assert "running elsewhere" in str(caught.value) and f"pid {holder.pid}" in str(caught.value)
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]   # never touched the folder
    finally:
        holder.kill()
        holder.wait()


def test_second_launch_waits_then_runs_once_the_first_is_gone(run_kdx, tmp_path, capsys):
    holder = hold_lock(tmp_path / "run", 1.5)
    results = run_kdx(*FAST, "lock.poll_s=0.2", tmp_path=tmp_path)
    assert "running elsewhere" in capsys.readouterr().out and holder.wait() == 0
    assert results["status"] == "completed"
    assert len(list((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))) == 1   # no best-…-v1.ckpt
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    holder = hold_lock(tmp_path, 60)
    holder.kill()   # SIGKILL: no release, the lock file stays
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    with TrialLock(tmp_path, on_busy="exit"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale trial lock" in capsys.readouterr().out
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path):
    lock_file = tmp_path / LOCK_FILE
    lock_file.write_text(json.dumps({"host": "elsewhere-node", "pid": 1, "started": time.time(), "token": "x"}))
    with pytest.raises(TrialBusy):   # alive as far as we can tell: its heartbeat is fresh
        TrialLock(tmp_path, on_busy="exit", stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(lock_file, (old, old))
    lock = TrialLock(tmp_path, on_busy="exit", stale_after_s=60)
    lock.acquire()   # no heartbeat for 2 minutes: stale
    lock.release()


# ---- damaged store entries and results files ----------------------------------------------------------
def test_damaged_teacher_store_entry_is_set_aside(reference, tmp_path, capsys):
    _, cache = reference
    entry = next((cache / "teachers").glob("synthetic-*/"))
    copy = tmp_path / entry.name
    subprocess.run(["cp", "-r", str(entry), str(copy)], check=True)
    assert entry_is_intact(copy)
    teacher = copy / "teacher.pt"
    teacher.write_bytes(teacher.read_bytes()[:100])
    assert not entry_is_intact(copy)
    assert not copy.exists() and len(list(tmp_path.glob(f"{entry.name}.damaged-*"))) == 1
    assert "is damaged" in capsys.readouterr().out


def test_damaged_results_file_is_set_aside_and_the_trial_is_not_completed(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "completed", "trial_key": "abc"')   # cut short
    assert not is_completed(tmp_path, "abc")
    assert not (tmp_path / "results.json").exists() and list(tmp_path.glob("results.json.damaged-*"))
