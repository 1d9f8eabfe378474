"""Token-level KD for generators: forward KL, reverse KL and the generalised JSD against the
formulas written out in plain Python, averaged over the labelled (answer) tokens only."""

import math

import pytest
import torch

from kdx.errors import KdxError
from kdx.methods.token_kd import TokenKD
from tests.methods.reference import LABELS, STUDENT, TEACHER, ce_by_hand, logits_step, softmax


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def divergence_by_hand(kind, student_row, teacher_row, t, beta=0.5):
    p_s, p_t = softmax(student_row, t), softmax(teacher_row, t)
    if kind == "forward":
        return kl(p_t, p_s)
    if kind == "reverse":
        return kl(p_s, p_t)
    m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


@pytest.mark.parametrize("kind, beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9)])
@pytest.mark.parametrize("alpha, t", [(0.5, 1.0), (1.0, 2.0)])
def test_sequence_level_terms_match_the_formulas(kind, beta, alpha, t):
    terms = TokenKD(divergence=kind, beta=beta, alpha=alpha, temperature=t).losses(logits_step(STUDENT, TEACHER, LABELS))
    d = t * t * sum(divergence_by_hand(kind, s, te, t, beta) for s, te in zip(STUDENT, TEACHER)) / len(STUDENT)
    ce = ce_by_hand(STUDENT, LABELS)
    assert terms[kind].item() == pytest.approx(d, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * d, rel=1e-5)


def test_jsd_is_symmetric_and_bounded_at_half():
    a = TokenKD(divergence="jsd", alpha=1.0).losses(logits_step(STUDENT, TEACHER, LABELS))["jsd"]
    b = TokenKD(divergence="jsd", alpha=1.0).losses(logits_step(TEACHER, STUDENT, LABELS))["jsd"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and 0 < a.item() < math.log(2)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_generation_averages_over_answer_tokens_only(kind):
    # (B=2, T=3, V=3) logits: rows of STUDENT/TEACHER laid out per token; labels −100 on the prompt
    # and padding, so only positions (0, 1), (0, 2) and (1, 2) count.
    student = torch.tensor([[STUDENT[0], STUDENT[1], STUDENT[2]], [STUDENT[3], STUDENT[0], STUDENT[1]]],
                           requires_grad=True)
    teacher = torch.tensor([[TEACHER[0], TEACHER[1], TEACHER[2]], [TEACHER[3], TEACHER[0], TEACHER[1]]])
    labels = torch.tensor([[-100, 1, 2], [-100, -100, 0]])
    terms = TokenKD(divergence=kind, alpha=0.5, temperature=2.0).losses(
        logits_step(student, teacher, labels, family="generation"))
    positions = [(0, 1), (0, 2), (1, 2)]
    d = 4 * sum(divergence_by_hand(kind, student[b, t].tolist(), teacher[b, t].tolist(), 2.0)
                for b, t in positions) / 3
    ce = sum(-math.log(softmax(student[b, t].tolist())[int(labels[b, t])]) for b, t in positions) / 3
    assert terms[kind].item() == pytest.approx(d, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    terms["loss"].backward()
    assert student.grad[0, 0].abs().sum() == 0 and student.grad[1, :2].abs().sum() == 0   # prompt: no gradient


def test_bad_settings_are_refused():
    with pytest.raises(KdxError, match="divergence"):
        TokenKD(divergence="wasserstein")
    with pytest.raises(KdxError, match="beta"):
        TokenKD(divergence="jsd", beta=1.0)


@pytest.mark.parametrize("family", ["regression", "span_prediction"])
def test_tasks_without_output_distributions_are_refused(family):
    from kdx.methods.base import SetupContext
    from kdx.tasks.base import TaskSpec

    spec = TaskSpec("t", num_labels=1 if family == "regression" else 2, metrics=[], main_metric="mse", family=family)
    with pytest.raises(KdxError, match="method=kd"):
        TokenKD().setup(SetupContext(spec=spec, student=torch.nn.Linear(1, 1)))
