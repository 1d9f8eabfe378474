"""Combined-KD: MATE-KD's augmentation with Annealing-KD's phases on raw logits — the phase split,
the student's ½·[annealed MSE on x̃ + on x] and phase 2's CE, the generator's MSE objective against
formulas written out here, and generator/student alternation continuing in phase 2."""

import pytest
import torch

from kdx.distill import DistillationModule
from kdx.methods.base import Budget
from kdx.methods.combined import CombinedKD
from kdx.models.outputs import freeze
from kdx.tasks.base import model_inputs
from tests.methods.reference import (ARCH, OPTIM, ParameterWatch, a_batch, alternation, annealing_phi_by_hand,
                                     by_hand_ce, by_hand_mse, context, fit, fixed_perturbation,
                                     generator_terms_on_fixed_perturbation, models,
                                     perturbed_by_hand, train_step)


def test_combined_phases_are_annealing_kd_phases():
    method = CombinedKD(tau_max=10, phase1_epochs=30, phase2_epochs=10, generator={"arch": ARCH})
    assert [(p.name, p.max_epochs, p.restart_from_best) for p in method.phases(Budget(max_epochs=40))] == \
        [("anneal", 30, False), ("ce", 10, True)]
    # without explicit epochs the trainer budget is split 3:1 (the paper's 30 + 10)
    assert [p.max_epochs for p in CombinedKD(generator={"arch": ARCH}).phases(Budget(max_epochs=40))] == [30, 10]


def test_combined_losses_follow_the_annealed_mse_formula(tiny, monkeypatch):
    teacher, student = models(tiny, init_range=0.5)
    student.eval()
    method = CombinedKD(tau_max=10, phase1_epochs=30, phase2_epochs=10, generator={"arch": ARCH})
    method.setup(context(tiny, student, teacher, max_epochs=40))
    batch = a_batch(tiny)
    mask, one_hot, tokens = fixed_perturbation(tiny, batch)
    monkeypatch.setattr(method, "sample_perturbation", lambda step: (mask, one_hot))
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        s_adv, t_adv = perturbed_by_hand(student, batch, mask, tokens), perturbed_by_hand(teacher, batch, mask, tokens)
    assert not torch.allclose(s_adv, z_s, atol=1e-3)
    for epoch in (0, 2, 7, 29):
        phi = annealing_phi_by_hand(epoch, 30, 10)
        terms = method.losses(train_step(batch, student, teacher, epoch=epoch, max_epochs=30))
        mse_adv, mse_clean = by_hand_mse(s_adv, phi * t_adv), by_hand_mse(z_s, phi * z_t)
        assert torch.allclose(terms["annealed_mse_adv"], mse_adv, atol=1e-5), epoch
        assert torch.allclose(terms["annealed_mse"], mse_clean, atol=1e-5), epoch
        assert torch.allclose(terms["loss"], (mse_adv + mse_clean) / 2, atol=1e-5), epoch
        assert terms["phi"].item() == pytest.approx(phi)
    phase2 = method.losses(train_step(batch, student, teacher, phase=1))
    assert torch.allclose(phase2["loss"], by_hand_ce(z_s, batch["labels"]), atol=1e-5)
    assert torch.allclose(method.adversarial_divergence(s_adv, t_adv, train_step(batch, student, teacher)),
                          by_hand_mse(s_adv, t_adv))


def test_combined_generator_maximises_the_mse_on_perturbed_inputs(tiny, monkeypatch):
    teacher, student = models(tiny, init_range=0.5)
    student.eval()
    freeze(teacher)
    method = CombinedKD(generator={"arch": ARCH})
    method.setup(context(tiny, student, teacher))
    terms, student_adv, teacher_adv, _, _ = generator_terms_on_fixed_perturbation(method, tiny, student, teacher,
                                                                                  monkeypatch)
    expected = by_hand_mse(student_adv, teacher_adv)
    assert torch.allclose(terms["generator_div"], expected, atol=1e-5)
    assert torch.allclose(terms["loss"], -expected, atol=1e-5)


def test_combined_real_run_keeps_alternating_in_phase_two(tiny):
    teacher, student = models(tiny)
    method = CombinedKD(tau_max=2, phase1_epochs=1, phase2_epochs=1, generator_steps=2, student_steps=3,
                        generator_lr=1e-3, generator={"arch": ARCH})
    method.setup(context(tiny, student, teacher, max_epochs=2))
    watch = ParameterWatch("generator")
    fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher, phase=1, student_clip=1.0), tiny, [watch])
    assert watch.changed == alternation(2, 3, 5)
