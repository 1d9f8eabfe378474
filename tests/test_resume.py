"""A run interrupted inside Annealing-KD's phase 1 and relaunched resumes from its last.ckpt,
continues the same temperature staircase in the same phase, and ends with the metrics of an
uninterrupted run (CPU, deterministic=True).

The interruption is real: a Lightning callback raises out of `trainer.fit` in the middle of an
epoch (as a crash or preemption would), and the relaunch is the same command in the same folder.
"""

import math
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

import kdx.training
from kdx.methods.annealing import AnnealingKD

TINY = ["task=synthetic", "task.train_size=200", "task.val_size=100", "teacher_training.max_epochs=1",
        "method=annealing", "method.tau_max=2", "trainer.max_epochs=4"]
# 200 examples / batch 32 = 7 steps per epoch; phase 1 = round(4·14/18) = 3 epochs, temp 1, 2, 2.
STEPS_PER_EPOCH = 7
CRASH_AT_STEP = 10          # phase 1, epoch 1, fourth batch: after last.ckpt of epoch 0


class Preempted(Exception):
    pass


class CrashInPhase1(Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if module.phase == 0 and trainer.global_step == CRASH_AT_STEP:
            raise Preempted(f"killed at phase 1 step {CRASH_AT_STEP}")


@pytest.fixture
def record_schedule(monkeypatch):
    """Every (phase, epoch, step, Φ) the method computes, in order."""
    seen = []
    original = AnnealingKD.losses

    def recording(self, step):
        terms = original(self, step)
        p = step.progress
        seen.append((p.phase, p.epoch, p.step, float(terms["phi"]) if "phi" in terms else math.nan))
        return terms

    monkeypatch.setattr(AnnealingKD, "losses", recording)
    return seen


def with_crash(monkeypatch):
    original = kdx.training.make_trainer

    def make_trainer(trainer_cfg, callbacks=(), logger=False, **overrides):
        return original(trainer_cfg, callbacks=[*callbacks, CrashInPhase1()], logger=logger, **overrides)

    monkeypatch.setattr(kdx.training, "make_trainer", make_trainer)
    return original


def test_resume_in_phase1_reproduces_uninterrupted_run(run_kdx, tmp_path, monkeypatch, record_schedule):
    cache = tmp_path / "cache"
    straight = run_kdx(*TINY, tmp_path=tmp_path / "straight", cache_dir=cache)
    uninterrupted = list(record_schedule)
    record_schedule.clear()

    original = with_crash(monkeypatch)
    with pytest.raises(Preempted):
        run_kdx(*TINY, tmp_path=tmp_path / "crashed", cache_dir=cache)
    before_crash = list(record_schedule)
    record_schedule.clear()
    run_dir = tmp_path / "crashed" / "run"
    assert (run_dir / "checkpoints" / "phase1-anneal" / "last.ckpt").exists()
    assert not (run_dir / "results.json").exists()

    monkeypatch.setattr(kdx.training, "make_trainer", original)
    resumed = run_kdx(*TINY, tmp_path=tmp_path / "crashed", cache_dir=cache)
    after_resume = list(record_schedule)

    # Before the crash: the same steps as the uninterrupted run.
    assert before_crash == uninterrupted[:CRASH_AT_STEP]
    # The relaunch restarts at the first step of the interrupted epoch (its last.ckpt is the end of
    # epoch 0), still in phase 1, and from there follows the uninterrupted schedule step by step.
    assert after_resume[0][:3] == (0, 1, STEPS_PER_EPOCH)
    assert after_resume == uninterrupted[STEPS_PER_EPOCH:]
    phase1 = [(epoch, phi) for phase, epoch, _, phi in uninterrupted if phase == 0]
    assert sorted(set(phase1)) == [(0, 0.5), (1, 1.0), (2, 1.0)]   # temp/τ_max = 1/2, 2/2, 2/2
    # Same metrics, same step count.
    assert resumed["status"] == "completed"
    assert resumed["steps"] == straight["steps"]
    for name, value in straight["metrics"].items():
        assert resumed["metrics"][name] == pytest.approx(value, abs=1e-6), name


def test_kdx_checkpoint_callback_keeps_model_checkpoints_state_key(tmp_path):
    """kdx's checkpoint callback formats its state key once (Lightning reads it around every hook
    call); it must stay ModelCheckpoint's own, or a last.ckpt written before would not give its
    best-checkpoint state back on resume."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from kdx.tasks.base import TaskSpec
    from kdx.training import checkpoint_callback

    spec = TaskSpec(name="t", num_labels=2, metrics=["acc"], main_metric="acc")
    kdx_own = checkpoint_callback(spec, tmp_path, every_n_epochs=2, save_last=True)
    same = ModelCheckpoint(dirpath=str(tmp_path), filename="best-epoch{epoch:02d}-step{step}",
                           auto_insert_metric_name=False, monitor=spec.main_metric_name, mode="max",
                           save_top_k=1, every_n_epochs=2)
    assert kdx_own.state_key == same.state_key == kdx_own.state_key


def test_one_callback_rewrites_last_ckpt_at_every_validation_and_keeps_the_best(run_kdx, tmp_path, monkeypatch):
    """last.ckpt is written after every epoch's validation, whether or not the best improved (a
    killed run resumes from its latest epoch); best-*.ckpt only when the score improves."""
    import torch

    saves = []
    original = kdx.training.Checkpoint._save_checkpoint

    def record(self, trainer, filepath):
        original(self, trainer, filepath)
        saves.append((trainer.current_epoch, Path(filepath).name, float(self.best_model_score)))

    monkeypatch.setattr(kdx.training.Checkpoint, "_save_checkpoint", record)
    run_kdx("method=finetune", "task.train_size=96", "task.val_size=32", "trainer.max_epochs=4", tmp_path=tmp_path)
    assert [epoch for epoch, name, _ in saves if name == "last.ckpt"] == [0, 1, 2, 3]
    best_epochs = [(epoch, score) for epoch, name, score in saves if name.startswith("best-")]
    assert len(best_epochs) < 4    # some epochs did not improve (this run's score stays at its first)
    assert best_epochs[0][0] == 0 and all(b[1] > a[1] for a, b in zip(best_epochs, best_epochs[1:]))
    folder = tmp_path / "run" / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 3
    assert len(list(folder.glob("best-*.ckpt"))) == 1
