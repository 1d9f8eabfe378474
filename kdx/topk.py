"""Token-level teacher outputs kept as top-k logits plus the tail mass (the teacher-output cache's
compact form for language-modelling and generation teachers, whose full (T, V) logits per example
are too large to store).

Per position the cache keeps the k largest logits z_(1..k), their token ids, and
`tail = log Σ_{j ∉ top-k} exp(z_j)` (the log of the unnormalised mass of the other V − k tokens).
`expand` turns that back into dense logits ẑ: the top-k tokens get their own logits and each of
the V − k others gets `tail − log(V − k)`. Then

    softmax(ẑ)_i = softmax(z)_i              for every top-k token i (exact),
    Σ_{j ∉ top-k} softmax(ẑ)_j = tail mass    (exact), spread evenly over those tokens,

so every KD loss reads the cached teacher unchanged: at temperature 1 the KD loss on this
representation is KL(p̂_T ‖ p_S) = Σ_{i ∈ top-k} p_T,i log(p_T,i / p_S,i)
+ Σ_{j ∉ top-k} (m/(V−k)) log((m/(V−k)) / p_S,j), with m the tail mass; it differs from the full
KL only in how the tail mass is shared among tail tokens, and equals it when k = V. At τ ≠ 1 the
softened tail is that of ẑ/τ (an approximation: the spread of the tail logits is not kept).
"""

import math

import torch


def compress(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values (..., k), indices (..., k), tail (...)) of `logits` (..., V); k ≥ V keeps everything
    (tail = −inf)."""
    vocab = logits.size(-1)
    k = min(k, vocab)
    values, indices = logits.topk(k, dim=-1)
    rest = logits.scatter(-1, indices, float("-inf"))
    return values, indices, torch.logsumexp(rest, dim=-1)


def expand(values: torch.Tensor, indices: torch.Tensor, tail: torch.Tensor, vocab: int) -> torch.Tensor:
    """Dense logits (..., V) whose softmax has the top-k probabilities and the tail mass exactly."""
    k = values.size(-1)
    fill = tail - math.log(vocab - k) if vocab > k else torch.full_like(tail, float("-inf"))
    dense = fill.unsqueeze(-1).expand(*tail.shape, vocab).clone()
    return dense.scatter(-1, indices.long(), values)
