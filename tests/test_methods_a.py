"""Annealing-KD, Continuation-KD, label smoothing, teacher-free KD, self-KD and TAKD: schedules
against METHODS.md, losses against the formulas written out here in plain Python, the
Continuation-KD → Annealing-KD special case, phase 2 starting from the best phase-1 weights, and
every method end to end on a shrunken synthetic task."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

import kdx.run
from kdx.errors import KdxError
from kdx.methods.annealing import AnnealingKD
from kdx.methods.base import Progress, TrainStep
from kdx.methods.continuation import ContinuationKD
from kdx.methods.label_smoothing import LabelSmoothing
from kdx.methods.schedules import (annealing_scale, annealing_temperature, continuation_phi,
                                   continuation_psi)
from kdx.methods.self_kd import SelfKD
from kdx.methods.takd import TAKD
from kdx.methods.tf_reg import TeacherFreeReg
from kdx.teacher import teacher_config

STUDENT = [[1.0, -0.5, 0.3], [0.2, 0.1, -1.2], [-0.7, 2.0, 0.4], [0.5, 0.5, 0.0]]
TEACHER = [[2.5, -1.0, 0.0], [0.0, 1.5, -2.0], [-1.0, 3.0, 1.0], [0.4, 0.6, 0.1]]
LABELS = [0, 1, 1, 2]


# ---- plain-Python reference formulas -------------------------------------------------------
def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def ce_by_hand(student, labels):
    return sum(-math.log(softmax(row)[y]) for row, y in zip(student, labels)) / len(labels)


def soft_ce_by_hand(student, targets):
    return sum(-sum(q * math.log(p) for q, p in zip(target, softmax(row)))
               for row, target in zip(student, targets)) / len(student)


def kl_by_hand(student, teacher_probs, t):
    """KL(teacher_probs ‖ softmax(z_S/t)) averaged over rows."""
    return sum(sum(p * math.log(p / q) for p, q in zip(tp, softmax(row, t)))
               for row, tp in zip(student, teacher_probs)) / len(student)


def official_annealing_temps(e1, tau_max):
    """The official code's loop: temp starts at 1, +1 at epoch e when e % (E1//τ_max) == 0 and e > 0."""
    temps, temp = [], 1
    for epoch in range(e1):
        if epoch % (e1 // tau_max) == 0 and epoch > 0:
            temp = min(tau_max, temp + 1)
        temps.append(temp)
    return temps


def make_step(student, teacher, labels, epoch=0, phase=0, max_epochs=10, step=0, total_steps=100,
              regression=False):
    s = student if isinstance(student, torch.Tensor) else torch.tensor(student, requires_grad=True)
    t = torch.tensor(teacher) if not isinstance(teacher, torch.Tensor) else teacher
    return TrainStep(batch={}, labels=torch.tensor(labels), regression=regression,
                     progress=Progress(epoch=epoch, step=step, max_epochs=max_epochs,
                                       total_steps=total_steps, phase=phase),
                     student_forward=lambda **_: s, teacher_forward=lambda **_: t, inputs={})


# ---- schedules -----------------------------------------------------------------------------
def test_annealing_temperature_glue_defaults():
    # τ_max = 7, E1 = 14: temp goes up by one every 2 epochs, starting at 1 (METHODS.md §2).
    expected = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert [annealing_temperature(e, 14, 7) for e in range(14)] == expected
    assert [annealing_scale(e, 14, 7) for e in range(14)] == pytest.approx([t / 7 for t in expected])


@pytest.mark.parametrize("e1,tau_max", [(14, 7), (20, 7), (10, 7), (200, 10), (30, 10), (7, 7)])
def test_annealing_temperature_follows_official_loop(e1, tau_max):
    assert [annealing_temperature(e, e1, tau_max) for e in range(e1)] == official_annealing_temps(e1, tau_max)


def test_annealing_temperature_falls_back_to_steps_when_fewer_epochs_than_temperatures():
    # E1 = 3 < τ_max = 7, 70 steps in the phase: each temperature holds 10 steps.
    temps = [annealing_temperature(0, 3, 7, step=s, total_steps=70) for s in (0, 9, 10, 35, 59, 60, 69)]
    assert temps == [1, 1, 2, 4, 6, 7, 7]
    with pytest.raises(KdxError):
        annealing_temperature(0, 3, 7)


def test_continuation_phi_steps_down_every_n_over_tmax_epochs():
    # NLU: T_max = 10, n = 30 epochs: T_i = 10, 10, 10, 9, 9, 9, ..., φ = 1 - (T_i - 1)/T_max.
    for epoch in range(30):
        t_i = max(1, 10 - epoch // 3)
        assert continuation_phi(epoch, 30, 10) == pytest.approx(1 - (t_i - 1) / 10)


def test_continuation_psi_nlu_and_cv_ramps():
    # Paper epochs are 1-based: ψ(i) = i/40 for i = 1..20, then 1 (NLU).
    for i in range(1, 31):
        assert continuation_psi(i - 1) == pytest.approx(i / 40 if i <= 20 else 1.0)
    # CV: ψ(i) = i/150 up to 150, then 1.
    for i in (1, 75, 150, 151, 200):
        assert continuation_psi(i - 1, ramp_epochs=150, slope=1 / 150) == pytest.approx(min(1.0, i / 150))


def test_continuation_psi_step():
    assert [continuation_psi(e, kind="step", step_epoch=3) for e in range(5)] == [0, 0, 0, 1, 1]
    with pytest.raises(KdxError):
        continuation_psi(0, kind="step")
    with pytest.raises(KdxError):
        continuation_psi(0, kind="cosine")


# ---- Annealing-KD --------------------------------------------------------------------------
def phases_for(method, max_epochs, max_steps=-1):
    method.prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": max_epochs, "max_steps": max_steps}}))
    return method.phases()


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


@pytest.mark.parametrize("epoch", [0, 3, 13])
def test_annealing_phase1_loss_is_mse_to_scaled_teacher(epoch):
    temp = official_annealing_temps(14, 7)[epoch]
    terms = AnnealingKD(tau_max=7).losses(make_step(STUDENT, TEACHER, LABELS, epoch=epoch, max_epochs=14))
    expected = sum((s - temp / 7 * t) ** 2 for rs, rt in zip(STUDENT, TEACHER) for s, t in zip(rs, rt)) / 12
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["annealed_mse"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["phi"].item() == pytest.approx(temp / 7)


def test_annealing_phase2_loss_is_ce_or_mse():
    terms = AnnealingKD().losses(make_step(STUDENT, TEACHER, LABELS, phase=1))
    assert terms["loss"].item() == pytest.approx(ce_by_hand(STUDENT, LABELS), rel=1e-6)
    reg = AnnealingKD().losses(make_step([[0.5], [2.0]], [[1.0], [1.0]], [1.0, 0.0], phase=1, regression=True))
    assert reg["loss"].item() == pytest.approx(((0.5 - 1) ** 2 + (2.0 - 0) ** 2) / 2)


# ---- Continuation-KD -----------------------------------------------------------------------
@pytest.mark.parametrize("margin", [0.0, 0.5, 3.0])
def test_continuation_loss_matches_formula(margin):
    epoch, n, t_max = 7, 30, 10
    phi = 1 - (max(1, t_max - epoch // 3) - 1) / t_max
    psi = (epoch + 1) / 40
    method = ContinuationKD(t_max=t_max, margin=margin)
    terms = method.losses(make_step(STUDENT, TEACHER, LABELS, epoch=epoch, max_epochs=n))
    per_sample = [max(0.0, sum((s - phi * t) ** 2 for s, t in zip(rs, rt)) - margin * phi)
                  for rs, rt in zip(STUDENT, TEACHER)]
    cnt = sum(per_sample) / len(per_sample)
    ce = ce_by_hand(STUDENT, LABELS)
    assert terms["cnt"].item() == pytest.approx(cnt, rel=1e-6, abs=1e-9)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(psi * ce + (1 - psi) * cnt, rel=1e-6)
    if margin == 3.0:
        assert 0.0 in per_sample  # the hinge is active for some sample


def test_continuation_mean_distance_divides_by_classes():
    method = ContinuationKD(margin=0.0, distance="mean")
    terms = method.losses(make_step(STUDENT, TEACHER, LABELS, epoch=29, max_epochs=30))  # φ = 1
    expected = sum((s - t) ** 2 for rs, rt in zip(STUDENT, TEACHER) for s, t in zip(rs, rt)) / 12
    assert terms["cnt"].item() == pytest.approx(expected, rel=1e-6)


def test_continuation_with_zero_margin_and_step_psi_is_annealing():
    """Same batch, same weights: identical losses and gradients at chosen epochs of both phases."""
    e1, e2, tau_max, steps_per_epoch = 10, 3, 5, 4
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, teacher = torch.randn(8, 6), torch.randn(8, 3) * 3
    labels = [0, 1, 2, 1, 0, 2, 2, 1]
    annealing = AnnealingKD(tau_max=tau_max, phase1_epochs=e1, phase2_epochs=e2)
    continuation = ContinuationKD(t_max=tau_max, margin=0.0, distance="mean", anneal_epochs=e1,
                                  psi={"kind": "step", "step_epoch": e1})

    def loss_and_grad(method, epoch, phase, max_epochs):
        model.zero_grad()
        terms = method.losses(make_step(model(x), teacher, labels, epoch=epoch, phase=phase, max_epochs=max_epochs,
                                        step=epoch * steps_per_epoch, total_steps=max_epochs * steps_per_epoch))
        terms["loss"].backward()
        return terms["loss"].detach(), [p.grad.clone() for p in model.parameters()]

    for epoch in (0, 1, 2, 5, 9, 10, 12):
        if epoch < e1:
            expected = loss_and_grad(annealing, epoch, 0, e1)
        else:
            expected = loss_and_grad(annealing, epoch - e1, 1, e2)
        got = loss_and_grad(continuation, epoch, 0, e1 + e2)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-8)
        for g, e in zip(got[1], expected[1]):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-8)


def test_continuation_rejects_bad_knobs():
    with pytest.raises(KdxError):
        ContinuationKD(distance="l1")
    with pytest.raises(KdxError):
        ContinuationKD(margin=-1)
    with pytest.raises(KdxError):
        ContinuationKD(psi={"kind": "step"})


# ---- label regularisation ------------------------------------------------------------------
def test_label_smoothing_matches_formula():
    alpha, k = 0.1, 3
    targets = [[(1 - alpha) * (c == y) + alpha / k for c in range(k)] for y in LABELS]
    terms = LabelSmoothing(alpha=alpha).losses(make_step(STUDENT, TEACHER, LABELS))
    assert terms["loss"].item() == pytest.approx(soft_ce_by_hand(STUDENT, targets), rel=1e-6)


def test_label_smoothing_ignores_padded_tokens():
    # Token-level (B=1, T=4, V=3) with the last token's label -100.
    student = torch.tensor([STUDENT], requires_grad=True)
    step = make_step(student, torch.tensor([TEACHER]), [[0, 1, 1, -100]])
    targets = [[0.9 * (c == y) + 0.1 / 3 for c in range(3)] for y in (0, 1, 1)]
    got = LabelSmoothing(alpha=0.1).losses(step)["loss"].item()
    assert got == pytest.approx(soft_ce_by_hand(STUDENT[:3], targets), rel=1e-6)


@pytest.mark.parametrize("soften", ["probabilities", "log_probabilities"])
def test_tf_reg_matches_formula(soften):
    a, alpha, tau, k = 0.9, 0.3, 4.0, 3
    virtual = [[a if c == y else (1 - a) / (k - 1) for c in range(k)] for y in LABELS]
    if soften == "probabilities":
        teacher_probs = [softmax(row, tau) for row in virtual]
    else:
        teacher_probs = [softmax([math.log(p) for p in row], tau) for row in virtual]
    reg = tau ** 2 * kl_by_hand(STUDENT, teacher_probs, tau)
    ce = ce_by_hand(STUDENT, LABELS)
    method = TeacherFreeReg(correct_prob=a, alpha=alpha, temperature=tau, soften=soften)
    terms = method.losses(make_step(STUDENT, TEACHER, LABELS))
    assert terms["virtual_kd"].item() == pytest.approx(reg, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * reg, rel=1e-5)


def test_tf_reg_log_probabilities_at_tau_one_is_the_virtual_teacher():
    virtual = [[0.99 if c == y else 0.005 for c in range(3)] for y in LABELS]
    method = TeacherFreeReg(alpha=1.0, temperature=1.0, soften="log_probabilities")
    got = method.losses(make_step(STUDENT, TEACHER, LABELS))["virtual_kd"].item()
    assert got == pytest.approx(kl_by_hand(STUDENT, virtual, 1.0), rel=1e-5)


@pytest.mark.parametrize("cls", [SelfKD, TAKD])
def test_self_kd_and_takd_use_the_vanilla_kd_loss(cls):
    alpha, tau = 0.4, 3.0
    terms = cls(alpha=alpha, temperature=tau).losses(make_step(STUDENT, TEACHER, LABELS))
    kd = tau ** 2 * kl_by_hand(STUDENT, [softmax(r, tau) for r in TEACHER], tau)
    expected = (1 - alpha) * ce_by_hand(STUDENT, LABELS) + alpha * kd
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_self_kd_teacher_is_the_student_spec():
    cfg = OmegaConf.create({"model": {"teacher": {"_target_": "big", "hidden_size": 128},
                                      "student": {"_target_": "small", "init": "random", "hidden_size": 32}}})
    derived = teacher_config(cfg, SelfKD.teacher_spec)
    assert derived.model.teacher._target_ == "small" and derived.model.teacher.hidden_size == 32
    assert derived.model.teacher.init == "random"
    assert cfg.model.teacher._target_ == "big"  # the trial's own config is untouched
    cfg.model.student.init = "truncated"
    with pytest.raises(KdxError):
        teacher_config(cfg, "student")


# ---- end to end ----------------------------------------------------------------------------
TINY = ["task=synthetic", "task.train_size=200", "task.val_size=100", "teacher_training.max_epochs=1",
        "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One teacher store for the module: the tiny teacher is fine-tuned once."""
    return tmp_path_factory.mktemp("cache")


class RecordFitStart(Callback):
    """The student's weights, the optimizer state and the LR when each phase starts training."""

    def __init__(self, seen):
        self.seen = seen

    def on_train_start(self, trainer, module):
        optimizer = trainer.optimizers[0]
        self.seen.append({"phase": module.phase, "student": copy.deepcopy(module.student.state_dict()),
                          "optimizer_state": len(optimizer.state), "lr": optimizer.param_groups[0]["lr"]})


def test_annealing_phase2_starts_from_best_phase1_weights(run_kdx, tmp_path, shared_cache, monkeypatch):
    seen = []
    original = kdx.run.make_trainer

    def make_trainer(trainer_cfg, callbacks=(), logger=False, **overrides):
        return original(trainer_cfg, callbacks=[*callbacks, RecordFitStart(seen)], logger=logger, **overrides)

    monkeypatch.setattr(kdx.run, "make_trainer", make_trainer)
    results = run_kdx(*TINY, "method=annealing", "trainer.max_epochs=3", "optim.lr=0.003",
                      tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed"
    ckpts = tmp_path / "run" / "checkpoints"
    done1 = json.loads((ckpts / "phase1-anneal" / "phase_done.json").read_text())
    done2 = json.loads((ckpts / "phase2-ce" / "phase_done.json").read_text())
    assert [s["phase"] for s in seen] == [0, 1]
    best1 = torch.load(done1["best_path"], map_location="cpu", weights_only=False)["state_dict"]
    start2 = seen[1]["student"]
    for name, tensor in start2.items():
        assert torch.equal(tensor, best1[f"student.{name}"]), name
    # A fresh optimizer (no moments) at the full learning rate (fresh linear schedule).
    assert seen[1]["optimizer_state"] == 0
    assert seen[1]["lr"] == pytest.approx(0.003)
    # The result is a best checkpoint over both phases (on a tie, either phase's).
    score_of = {d["best_path"]: d["best_score"] for d in (done1, done2)}
    assert results["best_checkpoint"] in score_of
    assert score_of[results["best_checkpoint"]] == max(score_of.values())


@pytest.mark.parametrize("method", ["annealing", "continuation", "label_smoothing", "tf_reg", "self_kd", "takd"])
def test_method_runs_end_to_end(run_kdx, tmp_path, shared_cache, method):
    results = run_kdx(*TINY, f"method={method}", tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed" and results["method"] == method
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    assert 0.0 <= results["main_metric"]["value"] <= 1.0
    params = results["params"]
    if method == "self_kd":
        assert params["teacher"] == params["student"]       # a copy of the student's architecture
        info = json.loads((Path(results["teacher_source"]) / "info.json").read_text())
        assert info["teacher"]["hidden_size"] == results["config"]["model"]["student"]["hidden_size"]
    if method == "takd":
        assert "assistant" in results["teacher_source"]
        assert params["student"] < params["teacher"]          # the assistant, bigger than the student
    if method in ("label_smoothing", "tf_reg"):
        assert params["teacher"] is None
