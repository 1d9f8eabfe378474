"""MATE-KD: the student's three-thirds objective and the generator's objective against formulas
written out here, the 10/100 generator/student alternation (declared and on a real short run), the
generator's own optimizer and checkpointing, and the shared-vocabulary check."""

import pytest
import torch

from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.methods.base import STUDENT
from kdx.methods.mate import GENERATOR, MateKD, is_generator_step
from kdx.models.hf import bert_from_arch
from kdx.models.outputs import freeze
from kdx.tasks.base import model_inputs
from tests.methods.reference import (ARCH, OPTIM, ParameterWatch, a_batch, alternation, by_hand_ce,
                                     by_hand_soft_ce, context, fit, fixed_perturbation,
                                     generator_terms_on_fixed_perturbation, models, perturbed_by_hand,
                                     progress, train_step)


def mate(tiny, teacher, student, **kwargs):
    method = MateKD(generator={"arch": ARCH}, **kwargs)
    method.setup(context(tiny, student, teacher))
    return method


def test_mate_declares_a_teacher_and_a_generator_optimizer():
    method = MateKD(generator={"arch": ARCH})
    assert method.learns_from == "teacher" and method.needs_frozen_teacher
    assert [extra.name for extra in method.extra_optimizers()] == [GENERATOR]
    assert method.extra_optimizers()[0].clip == 5.0


def test_mate_student_loss_is_the_three_thirds_formula(tiny, monkeypatch):
    teacher, student = models(tiny, init_range=0.5)
    student.eval()
    method = mate(tiny, teacher, student)
    batch = a_batch(tiny)
    mask, one_hot, tokens = fixed_perturbation(tiny, batch)
    assert mask.any()
    monkeypatch.setattr(method, "sample_perturbation", lambda step: (mask, one_hot))
    terms = method.losses(train_step(batch, student, teacher))
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        s_adv, t_adv = perturbed_by_hand(student, batch, mask, tokens), perturbed_by_hand(teacher, batch, mask, tokens)
    ce = by_hand_ce(z_s, batch["labels"])
    div_adv, div_clean = by_hand_soft_ce(s_adv, t_adv), by_hand_soft_ce(z_s, z_t)
    assert not torch.allclose(div_adv, div_clean, atol=1e-4)   # x̃ really differs from x
    assert torch.allclose(terms["ce"], ce, atol=1e-5)
    assert torch.allclose(terms["div_adv"], div_adv, atol=1e-5)
    assert torch.allclose(terms["div"], div_clean, atol=1e-5)
    assert torch.allclose(terms["loss"], (ce + div_adv + div_clean) / 3, atol=1e-5)


def test_mate_generator_maximises_the_adversarial_divergence(tiny, monkeypatch):
    teacher, student = models(tiny, init_range=0.5)
    freeze(teacher)   # as the trial's LightningModule does
    student.eval()
    method = mate(tiny, teacher, student)
    terms, student_adv, teacher_adv, mask, one_hot = generator_terms_on_fixed_perturbation(
        method, tiny, student, teacher, monkeypatch)
    expected = by_hand_soft_ce(student_adv, teacher_adv)
    assert torch.allclose(terms["generator_div"], expected, atol=1e-5)
    assert torch.allclose(terms["loss"], -expected, atol=1e-5)
    # the gradient reaches ŵ through both models (the teacher is differentiated through, not trained)
    terms["loss"].backward()
    assert one_hot.grad is not None and one_hot.grad[mask].abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_mate_alternates_10_generator_and_100_student_steps_per_110_batches():
    turns = [is_generator_step(step, 10, 100) for step in range(220)]
    assert sum(turns) == 20 and turns.count(False) == 200
    assert all(turns[cycle * 110 + i] == (i < 10) for cycle in range(2) for i in range(110))
    method = MateKD(generator={"arch": ARCH})
    sequences = [method.optimizer_sequence(progress(step=s)) for s in range(220)]
    assert sequences == [[GENERATOR] if (s % 110) < 10 else [STUDENT] for s in range(220)]


def test_mate_real_run_steps_generator_and_student_on_their_own_batches(tiny):
    teacher, student = models(tiny)
    method = mate(tiny, teacher, student, generator_steps=2, student_steps=3, generator_lr=1e-3)
    watch = ParameterWatch("generator")
    trainer = fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher, student_clip=1.0), tiny, [watch])
    batches = 5   # 40 examples, batch 8
    assert watch.changed == alternation(2, 3, batches)   # (generator changed, student changed)
    assert trainer.global_step == batches   # one optimizer step per batch, whichever model it updates
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_generator_is_checkpointed_and_not_in_the_student_optimizer(tiny):
    teacher, student = models(tiny)
    method = mate(tiny, teacher, student)
    module = DistillationModule(student, method, tiny.spec, OPTIM, teacher)
    assert not module.automatic_optimization
    assert any(k.startswith("method.generator.") for k in module.state_dict())
    assert not any(k.startswith("teacher") or k.startswith("method.teacher") for k in module.state_dict())
    student_params = {id(p) for p in student.parameters()}
    generator_params = {id(p) for p in method.generator.parameters()}
    extra = method.extra_optimizers()[0].make()
    assert {id(p) for g in extra.param_groups for p in g["params"]} == generator_params
    assert extra.param_groups[0]["lr"] == pytest.approx(5e-7)
    assert not student_params & generator_params


def test_mate_checks_the_shared_vocabulary(tiny):
    teacher, _ = models(tiny)
    student = bert_from_arch(3, tiny.vocab + 7, **ARCH)
    with pytest.raises(KdxError, match="vocabularies differ"):
        mate(tiny, teacher, student)


def test_mate_needs_a_tokenizer_with_a_mask_token(tiny):
    teacher, student = models(tiny)
    ctx = context(tiny, student, teacher)
    ctx.tokenizer = None
    with pytest.raises(KdxError, match="tokenizer"):
        MateKD(generator={"arch": ARCH}).setup(ctx)
