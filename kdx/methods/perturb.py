"""Input perturbations shared by the augmentation methods (MATE-KD, Combined-KD, backward-pass KD).

They all feed one perturbed token sequence to teacher and student through each model's own
embedding table, so all models must share one vocabulary (kdx.models.hf.check_shared_vocabulary).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdx.errors import KdxError


def embedding_table(model: nn.Module) -> nn.Embedding:
    if not hasattr(model, "get_input_embeddings") or model.get_input_embeddings() is None:
        raise KdxError(f"{type(model).__name__} has no input word embeddings to perturb",
                       "use Hugging Face text models (teacher, student and generator) for this method")
    return model.get_input_embeddings()


def content_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      special_ids: list[int]) -> torch.Tensor:
    """True where a real (non-special, non-padding) token sits: the positions that may be perturbed."""
    content = ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    if attention_mask is not None:
        content &= attention_mask.bool()
    return content


def sample_mask(content: torch.Tensor, probability: float) -> torch.Tensor:
    """M: each content token is masked independently with `probability` (MATE-KD: 0.3)."""
    return (torch.rand(content.shape, device=content.device) < probability) & content


def straight_through_gumbel(logits: torch.Tensor, tau: float = 1.0,
                            gumbel_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Straight-through Gumbel-softmax: the forward value is one_hot(argmax(logits + g)), the
    gradient is that of the soft sample softmax((logits + g)/tau)."""
    if gumbel_noise is None:
        gumbel_noise = -torch.empty_like(logits).exponential_().log()   # g = -log(Exp(1)) ~ Gumbel(0, 1)
    soft = F.softmax((logits + gumbel_noise) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.size(-1)).to(soft.dtype)
    return hard - soft.detach() + soft


def perturbed_embeddings(model: nn.Module, input_ids: torch.Tensor, token_weights: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """e' = M⊙(ŵ·E) + (1−M)⊙E[x] with the model's own embedding table E; differentiable in ŵ."""
    table = embedding_table(model).weight
    replaced = token_weights.to(table.dtype) @ table
    original = F.embedding(input_ids, table)
    m = mask.unsqueeze(-1).to(table.dtype)
    return m * replaced + (1 - m) * original


def special_token_ids(tokenizer) -> list[int]:
    return sorted({int(i) for i in tokenizer.all_special_ids})
