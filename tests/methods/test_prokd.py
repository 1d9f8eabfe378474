"""Pro-KD: its losses against formulas written out here, replay of the teacher store's trajectory
in order (one stage per equal share of the steps), checkpoint subsampling, the online teacher
trained alongside the student, and the online mode end to end."""

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import kdx.methods.prokd as prokd
from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.methods.base import STUDENT, Budget
from kdx.methods.prokd import TEACHER, ProKD
from kdx.models.hf import bert_from_arch
from tests.conftest import compose_trial, resolved_job
from tests.methods.reference import (NUM_LABELS, OPTIM, TEACHER_ARCH, TINY_RUN, annealing_phi_by_hand, by_hand_ce,
                                     by_hand_kl, by_hand_mse, context, fit, logged_columns, logits_step, models,
                                     progress)


def trajectory(tiny, folder, count):
    """`count` teacher checkpoints of distinct random weights, in order."""
    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        path = folder / f"epoch-{i + 1:03d}.pt"
        torch.save(bert_from_arch(NUM_LABELS, tiny.vocab, **TEACHER_ARCH).state_dict(), path)
        paths.append(path)
    return paths


def test_prokd_losses_against_their_formulas():
    torch.manual_seed(0)
    z_s, z_t, labels = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    step = logits_step(z_s, z_t, labels, epoch=5, step=50, max_epochs=14, total_steps=140)
    kd = ProKD(loss="kd_kl", alpha=0.4, temperature=3.0).distillation(z_s, z_t, step)
    assert torch.allclose(kd["loss"], 0.6 * by_hand_ce(z_s, labels) + 0.4 * by_hand_kl(z_s, z_t, 3.0), atol=1e-6)
    annealed = ProKD(loss="annealed_mse", tau_max=7).distillation(z_s, z_t, step)
    assert torch.allclose(annealed["loss"], by_hand_mse(z_s, annealing_phi_by_hand(5, 14, 7) * z_t), atol=1e-6)
    final = ProKD(final_ce_epochs=1).losses(logits_step(z_s, z_t, labels, phase=1))
    assert torch.allclose(final["loss"], by_hand_ce(z_s, labels), atol=1e-6)


def test_prokd_modes_declare_what_they_learn_from():
    replay, online = ProKD(teacher_mode="replay"), ProKD(teacher_mode="online")
    assert replay.learns_from == "trajectory" and replay.needs_frozen_teacher and not replay.extra_optimizers()
    assert online.learns_from == "online_teacher" and not online.needs_frozen_teacher
    assert [extra.name for extra in online.extra_optimizers()] == [TEACHER]
    assert online.optimizer_sequence(progress(phase=0)) == [STUDENT, TEACHER]
    assert online.optimizer_sequence(progress(phase=1)) == [STUDENT]
    assert replay.optimizer_sequence(progress(phase=0)) == [STUDENT]


def test_prokd_final_ce_phase_takes_its_epochs_from_the_budget():
    assert [(p.name, p.max_epochs) for p in ProKD(final_ce_epochs=2).phases(Budget(max_epochs=6))] == \
        [("trajectory", 4), ("ce", 2)]
    assert [p.name for p in ProKD().phases(Budget(max_epochs=6))] == ["trajectory"]
    with pytest.raises(KdxError, match="final_ce_epochs"):
        ProKD(final_ce_epochs=3).phases(Budget(max_epochs=3))


def test_prokd_teacher_lr_and_weight_decay_follow_the_config():
    job = resolved_job(compose_trial(["method=prokd", "teacher_training.lr=0.0042", "optim.weight_decay=0.123"]))
    assert job.method.teacher_lr == pytest.approx(0.0042)
    assert job.method.teacher_weight_decay == pytest.approx(0.123)


def test_prokd_replay_visits_the_trajectory_in_order(tiny, tmp_path, monkeypatch):
    teacher, student = models(tiny)
    files = trajectory(tiny, tmp_path, 3)
    method = ProKD(teacher_mode="replay")
    method.setup(context(tiny, student, teacher, max_epochs=1, trajectory=files, teacher_source="store"))
    loads = []
    real_load = prokd.load_state
    monkeypatch.setattr(prokd, "load_state", lambda model, path: (loads.append(path), real_load(model, path))[1])
    weights = [torch.load(f) for f in files]

    class TeacherWeights(Callback):
        held = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            current = module.teacher.state_dict()
            self.held.append([i for i, w in enumerate(weights)
                              if all(torch.equal(current[k], v) for k, v in w.items())])

    watch = TeacherWeights()
    fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher), tiny, [watch])
    # 5 steps in 3 equal stages: stage of step s is ⌊3s/5⌋
    assert watch.held == [[3 * s // 5] for s in range(5)]
    assert loads == files


def test_prokd_ckpt_interval_subsamples_and_keeps_the_last(tiny, tmp_path):
    teacher, student = models(tiny)
    files = [tmp_path / f"{i}.pt" for i in range(7)]
    method = ProKD(ckpt_interval=3)
    method.setup(context(tiny, student, teacher, trajectory=files, teacher_source="store"))
    assert method.checkpoints == [files[2], files[5], files[6]]
    with pytest.raises(KdxError, match="trajectory"):
        ProKD().setup(context(tiny, student, teacher, teacher_source="checkpoint.pt"))


def test_prokd_online_trains_the_teacher_alongside(tiny):
    _, student = models(tiny)
    method = ProKD(teacher_mode="online", ckpt_interval=2, teacher_lr=1e-3, teacher_weight_decay=0.01)
    method.setup(context(tiny, student, None, max_epochs=1, gradient_clip_val=1.0,
                         new_teacher=lambda: bert_from_arch(NUM_LABELS, tiny.vocab, **TEACHER_ARCH)))
    teacher_optimizer = method.extra_optimizers()[0]
    assert teacher_optimizer.clip == 1.0
    made = teacher_optimizer.make()
    assert {id(p) for g in made.param_groups for p in g["params"]} == {id(p) for p in method.online_teacher.parameters()}
    assert made.param_groups[0]["lr"] == pytest.approx(1e-3)

    class Watch(Callback):
        rows = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.online = {k: v.clone() for k, v in module.method.online_teacher.state_dict().items()}
            self.student = [p.detach().clone() for p in module.student.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            m = module.method
            target_is_fresh = all(torch.equal(v, self.online[k]) for k, v in m.target_teacher.state_dict().items())
            teacher_moved = any(not torch.equal(v, self.online[k]) for k, v in m.online_teacher.state_dict().items())
            student_moved = any(not torch.equal(a, b) for a, b in zip(self.student, module.student.parameters()))
            self.rows.append((target_is_fresh, teacher_moved, student_moved))

    watch = Watch()
    trainer = fit(DistillationModule(student, method, tiny.spec, OPTIM, None, student_clip=1.0), tiny, [watch])
    # the snapshot T^(i) is refreshed on steps 0, 2, 4, ...; both models learn on every batch
    assert watch.rows == [(s % 2 == 0, True, True) for s in range(5)]
    assert trainer.global_step == 5   # counts student updates only
    assert all(not p.requires_grad for p in method.target_teacher.parameters())


def test_prokd_online_runs_end_to_end(run_kdx, tmp_path, shared_cache):
    results = run_kdx(*TINY_RUN, "method=prokd", "method.teacher_mode=online", "method.final_ce_epochs=1",
                      tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed" and results["method"] == "prokd"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    assert 0.0 <= results["main_metric"]["value"] <= 1.0
    assert not (shared_cache / "teachers").exists()    # nothing fine-tuned into the store
    columns = logged_columns(tmp_path / "run")
    assert {"train/loss", "train/ce", "train/kd", "train/teacher_ce"} <= columns
