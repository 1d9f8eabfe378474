"""Annealing-KD: the phase budget, phase 1's MSE to the Φ-scaled teacher, phase 2's CE, and (end to
end) phase 2 starting from the best phase-1 weights with a fresh optimizer."""

import copy
import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import kdx.training
from kdx.errors import KdxError
from kdx.methods.annealing import AnnealingKD
from kdx.methods.base import Budget
from tests.methods.reference import (LABELS, STUDENT, TEACHER, TINY_RUN, ce_by_hand, logits_step,
                                     official_annealing_temps)


def phases_for(method, max_epochs, max_steps=-1):
    return method.phases(Budget(max_epochs=max_epochs, max_steps=max_steps))


def test_annealing_phase_budget():
    split = phases_for(AnnealingKD(), 18)
    assert [(p.name, p.max_epochs, p.restart_from_best) for p in split] == [("anneal", 14, False), ("ce", 4, True)]
    assert [p.max_epochs for p in phases_for(AnnealingKD(), 4)] == [3, 1]
    assert [p.max_epochs for p in phases_for(AnnealingKD(), 2)] == [1, 1]
    assert [p.max_epochs for p in phases_for(AnnealingKD(phase1_epochs=5, phase2_epochs=2), 4)] == [5, 2]
    assert [p.max_steps for p in phases_for(AnnealingKD(), -1, max_steps=90)] == [70, 20]
    with pytest.raises(KdxError):
        phases_for(AnnealingKD(), 1)
    with pytest.raises(KdxError):
        phases_for(AnnealingKD(phase1_epochs=5), 4)
    with pytest.raises(KdxError):
        AnnealingKD(phase1_fraction=1.0)


@pytest.mark.parametrize("epoch", [0, 3, 13])
def test_annealing_phase1_loss_is_mse_to_scaled_teacher(epoch):
    temp = official_annealing_temps(14, 7)[epoch]
    terms = AnnealingKD(tau_max=7).losses(logits_step(STUDENT, TEACHER, LABELS, epoch=epoch, max_epochs=14))
    expected = sum((s - temp / 7 * t) ** 2 for rs, rt in zip(STUDENT, TEACHER) for s, t in zip(rs, rt)) / 12
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["annealed_mse"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["phi"].item() == pytest.approx(temp / 7)


def test_annealing_phase2_loss_is_ce_or_mse():
    terms = AnnealingKD().losses(logits_step(STUDENT, TEACHER, LABELS, phase=1))
    assert terms["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-6)
    reg = AnnealingKD().losses(logits_step([[0.5], [2.0]], [[1.0], [1.0]], [1.0, 0.0], phase=1, family="regression"))
    assert reg["loss"].item() == pytest.approx(((0.5 - 1) ** 2 + (2.0 - 0) ** 2) / 2)


# ---- end to end ----------------------------------------------------------------------------------
class RecordFitStart(Callback):
    """The student's weights, the optimizer state and the LR when each Annealing-KD phase starts training."""

    def __init__(self, seen):
        self.seen = seen

    def on_train_start(self, trainer, module):
        if not isinstance(module.method, AnnealingKD):
            return   # the teacher store's fine-tuning, when kdx.store binds make_trainer after the patch
        optimizer = trainer.optimizers[0]
        self.seen.append({"phase": module.phase, "student": copy.deepcopy(module.student.state_dict()),
                          "optimizer_state": len(optimizer.state), "lr": optimizer.param_groups[0]["lr"]})


def test_annealing_phase2_starts_from_best_phase1_weights(run_kdx, tmp_path, shared_cache, monkeypatch):
    seen = []
    original = kdx.training.make_trainer

    def make_trainer(trainer_cfg, callbacks=(), logger=False, **overrides):
        return original(trainer_cfg, callbacks=[*callbacks, RecordFitStart(seen)], logger=logger, **overrides)

    monkeypatch.setattr(kdx.training, "make_trainer", make_trainer)
    # 3 epochs: phase 1 gets 2 (so it has a best of two), phase 2 one; warmup off for a full-LR start
    results = run_kdx(*TINY_RUN, "method=annealing", "trainer.max_epochs=3", "optim.lr=0.003",
                      "optim.warmup_ratio=0.0", tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed"
    ckpts = tmp_path / "run" / "checkpoints"
    done1 = json.loads((ckpts / "phase1-anneal" / "phase_done.json").read_text())
    done2 = json.loads((ckpts / "phase2-ce" / "phase_done.json").read_text())
    assert [s["phase"] for s in seen] == [0, 1]
    best1 = torch.load(done1["best_path"], map_location="cpu", weights_only=False)["state_dict"]
    start2 = seen[1]["student"]
    for name, tensor in start2.items():
        assert torch.equal(tensor, best1[f"student.{name}"]), name
    # ... which is not simply where phase 1 started
    assert any(not torch.equal(t, seen[0]["student"][n]) for n, t in start2.items())
    # A fresh optimizer (no moments) at the full learning rate (fresh linear schedule).
    assert seen[1]["optimizer_state"] == 0
    assert seen[1]["lr"] == pytest.approx(0.003)
    # The result is a best checkpoint over both phases (on a tie, either phase's).
    score_of = {d["best_path"]: d["best_score"] for d in (done1, done2)}
    assert results["best_checkpoint"] in score_of
    assert score_of[results["best_checkpoint"]] == max(score_of.values())
