"""Backward-pass KD: the gradient ascent in embedding space (it raises the teacher-student
divergence, moves only content tokens, takes steps of length η, leaves no parameter gradients),
the projection to the nearest tokens, the loss (1−α)·CE + α·[KD(x) + KD(x')] against formulas
written out here, and the shared-vocabulary check."""

import pytest
import torch

from kdx.errors import KdxError
from kdx.methods.bpkd import BackwardPassKD
from kdx.models.hf import bert_from_arch
from kdx.tasks.base import model_inputs
from tests.methods.reference import (ARCH, a_batch, by_hand_ce, by_hand_kl, content_tokens, context, models,
                                     train_step)


def bpkd(tiny, teacher, student, **kwargs):
    method = BackwardPassKD(**kwargs)
    method.setup(context(tiny, student, teacher))
    return method


def divergence_by_hand(teacher, student, teacher_inputs, student_inputs, tau):
    with torch.no_grad():
        return by_hand_kl(student(**student_inputs).logits, teacher(**teacher_inputs).logits, tau)


def moved_by(model, moved, inputs):
    """x' − x in the model's own embedding table."""
    return moved["inputs_embeds"] - model.get_input_embeddings().weight[inputs["input_ids"]]


def test_bpkd_learns_from_the_teacher():
    method = BackwardPassKD()
    assert method.learns_from == "teacher" and method.needs_frozen_teacher and not method.extra_optimizers()


@pytest.mark.parametrize("norm", ["l2", "sign"])
def test_bpkd_ascent_increases_the_divergence_and_leaves_no_parameter_grads(tiny, norm):
    teacher, student = models(tiny)
    student.eval()
    eta = 0.05 if norm == "l2" else 0.002
    method = bpkd(tiny, teacher, student, eta=eta, steps=2, norm=norm, divergence="kl", temperature=1.0)
    inputs = model_inputs(a_batch(tiny))
    teacher_inputs, student_inputs = method.auxiliary_inputs(inputs, regression=False)
    assert all(p.grad is None for p in [*teacher.parameters(), *student.parameters()])
    before = divergence_by_hand(teacher, student, inputs, inputs, 1.0)
    after = divergence_by_hand(teacher, student, teacher_inputs, student_inputs, 1.0)
    assert after > before * 1.01
    # only content tokens moved: [CLS], [SEP] and padding keep their embeddings
    content = content_tokens(inputs)
    for model, moved in ((teacher, teacher_inputs), (student, student_inputs)):
        delta = moved_by(model, moved, inputs)
        assert delta[~content].abs().max() == 0
        assert delta[content].abs().max() > 0


def test_bpkd_l2_step_has_length_eta_in_the_joint_embedding_space(tiny):
    teacher, student = models(tiny)
    student.eval()
    method = bpkd(tiny, teacher, student, eta=0.3, steps=1, norm="l2", divergence="mse")
    inputs = model_inputs(a_batch(tiny))
    teacher_inputs, student_inputs = method.auxiliary_inputs(inputs, regression=False)
    squared = 0
    for model, moved in ((teacher, teacher_inputs), (student, student_inputs)):
        squared = squared + moved_by(model, moved, inputs).pow(2).sum((1, 2))
    assert torch.allclose(squared.sqrt(), torch.full_like(squared, 0.3), atol=1e-5)


def test_bpkd_sign_step_moves_every_content_coordinate_by_eta(tiny):
    teacher, student = models(tiny)
    student.eval()
    method = bpkd(tiny, teacher, student, eta=0.01, steps=1, norm="sign", divergence="mse")
    inputs = model_inputs(a_batch(tiny))
    content = content_tokens(inputs)
    for model, moved in zip((teacher, student), method.auxiliary_inputs(inputs, regression=False)):
        delta = moved_by(model, moved, inputs)[content]
        assert torch.allclose(delta.abs(), torch.full_like(delta, 0.01), atol=1e-6)


def test_bpkd_projects_to_the_nearest_tokens(tiny):
    teacher, student = models(tiny)
    student.eval()
    inputs = model_inputs(a_batch(tiny))
    continuous = bpkd(tiny, teacher, student, eta=0.5, norm="sign", divergence="mse")
    projected = bpkd(tiny, teacher, student, eta=0.5, norm="sign", divergence="mse", project_to_tokens="l2")
    x_t, x_s = (moved["inputs_embeds"] for moved in continuous.auxiliary_inputs(inputs, regression=False))
    tokens, same = projected.auxiliary_inputs(inputs, regression=False)
    assert tokens is same and "inputs_embeds" not in tokens
    e_t, e_s = teacher.get_input_embeddings().weight, student.get_input_embeddings().weight
    distance = torch.cdist(x_t, e_t.expand(len(x_t), -1, -1)) ** 2 + torch.cdist(x_s, e_s.expand(len(x_s), -1, -1)) ** 2
    distance[..., :5] = float("inf")   # special tokens are never chosen
    expected = torch.where(content_tokens(inputs), distance.argmin(-1), inputs["input_ids"])
    assert torch.equal(tokens["input_ids"], expected)
    assert not torch.equal(expected, inputs["input_ids"])


def test_bpkd_loss_is_kd_on_x_plus_kd_on_x_prime(tiny):
    teacher, student = models(tiny, init_range=0.5)
    student.eval()
    method = bpkd(tiny, teacher, student, eta=0.1, alpha=0.3, temperature=2.0, ratio=0.5)
    batch = a_batch(tiny)
    terms = method.losses(train_step(batch, student, teacher))
    half = {k: v[:4] for k, v in model_inputs(batch).items()}     # ratio 0.5 of a batch of 8
    teacher_inputs, student_inputs = method.auxiliary_inputs(half, regression=False)
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        kd_aux = by_hand_kl(student(**student_inputs).logits, teacher(**teacher_inputs).logits, 2.0)
    ce, kd = by_hand_ce(z_s, batch["labels"]), by_hand_kl(z_s, z_t, 2.0)
    assert torch.allclose(terms["ce"], ce, atol=1e-5)
    assert torch.allclose(terms["kd"], kd, atol=1e-5)
    assert torch.allclose(terms["kd_aux"], kd_aux, atol=1e-5)
    assert torch.allclose(terms["loss"], 0.7 * ce + 0.3 * (kd + kd_aux), atol=1e-5)


def test_bpkd_checks_the_shared_vocabulary(tiny):
    teacher, _ = models(tiny)
    student = bert_from_arch(3, tiny.vocab + 7, **ARCH)
    with pytest.raises(KdxError, match="vocabularies differ"):
        bpkd(tiny, teacher, student)


def test_bpkd_rejects_bad_knobs():
    for bad in ({"norm": "l1"}, {"divergence": "js"}, {"project_to_tokens": "dot"}, {"steps": 0}, {"ratio": 0}):
        with pytest.raises(KdxError):
            BackwardPassKD(**bad)
