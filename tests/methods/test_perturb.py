"""The input perturbations shared by MATE-KD, Combined-KD and backward-pass KD
(kdx/methods/perturb.py): the straight-through Gumbel estimator and the perturbed embeddings."""

import torch

from kdx.methods.perturb import content_positions, perturbed_embeddings, sample_mask, straight_through_gumbel
from tests.methods.reference import models


def test_straight_through_gumbel_is_one_hot_forward_with_soft_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(3, 5, 7)))
    weights = torch.randn(3, 5, 7)
    sample = straight_through_gumbel(logits, tau=1.0, gumbel_noise=noise)
    expected_hard = torch.zeros(3, 5, 7).scatter_(-1, (logits + noise).argmax(-1, keepdim=True), 1.0)
    assert torch.equal(sample.detach(), expected_hard)
    (sample * weights).sum().backward()
    # the gradient is that of the soft sample softmax(logits + g), written out here
    soft_logits = logits.detach().clone().requires_grad_(True)
    z = (soft_logits + noise).exp()
    ((z / z.sum(-1, keepdim=True)) * weights).sum().backward()
    assert torch.allclose(logits.grad, soft_logits.grad, atol=1e-6)
    assert logits.grad.abs().sum() > 0


def test_perturbed_embeddings_replace_only_masked_positions(tiny):
    _, student = models(tiny)
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    mask = torch.tensor([[False, True, False, True, False]])
    new_tokens = torch.tensor([[5, 40, 6, 41, 7]])
    one_hot = torch.nn.functional.one_hot(new_tokens, tiny.vocab).float()
    table = student.bert.embeddings.word_embeddings.weight
    out = perturbed_embeddings(student, ids, one_hot, mask)
    expected = torch.stack([table[41 if i == 3 else 40 if i == 1 else int(ids[0, i])] for i in range(5)])
    assert torch.allclose(out[0], expected)


def test_only_real_non_special_tokens_may_be_masked():
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 12, 13, 14, 15, 3]])
    attention = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    content = content_positions(ids, attention, special_ids=[0, 1, 2, 3, 4])
    assert content.tolist() == [[False, True, True, False, False, False], [False, True, True, True, True, False]]
    torch.manual_seed(0)
    assert torch.equal(sample_mask(content, 1.0), content)
    assert not (sample_mask(content, 0.5) & ~content).any()
