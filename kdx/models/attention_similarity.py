"""How alike the attention of a causal LM's layers is, and which layers EchoAtt should share
(docs/methods.md §7).

Similarity of layers i and j on one sample: the cosine of their post-softmax attention maps, each
flattened over heads and positions; the matrix is averaged over the samples. A layer's score is its
mean similarity to every other layer.

Memory: samples run one at a time. A hook on each layer's attention module folds that layer's map
into the running sums as soon as it is computed (its squared norm and its dot products with the
earlier layers of the same sample): only the L × L sums are float64; the maps of one sample are
kept once, in the model's own dtype, in one preallocated buffer, and nothing else is retained
(in particular not the model's `output_attentions` tuple).

Plans: the inner layers (never the first or the last) sorted by score, highest first; the largest
gap between neighbours in that order cuts the list, or a target ratio takes the first
round(ratio · L) of them.
"""

import torch
import torch.nn as nn

from kdx.errors import KdxError
from kdx.models.echoatt import attention_sources, decoder_layers


@torch.no_grad()
def attention_similarity(model: nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    """(L, L) float64 mean over the rows of `blocks` (N, T token ids, no padding) of the cosine
    similarity of every pair of layers' attention maps."""
    layers = decoder_layers(model)
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")
    model.eval()
    count = len(layers)
    total = torch.zeros(count, count, dtype=torch.float64)
    state = {"maps": None, "gram": None}

    def fold(layer: int):
        def hook(module, args, output):
            probabilities = output[1]
            if probabilities is None:
                raise RuntimeError(f"layer {layer} returned no attention map (eager attention is required)")
            flat = probabilities.reshape(-1)
            if state["maps"] is None:
                state["maps"] = flat.new_empty(count, flat.numel())
            state["maps"][layer] = flat
            # dot products with this layer and every earlier one, summed in float64
            state["gram"][layer, :layer + 1] = (state["maps"][:layer + 1] @ flat).double()
        return hook

    handles = [layer.self_attn.register_forward_hook(fold(i)) for i, layer in enumerate(layers)]
    try:
        for row in blocks:
            state["gram"] = torch.zeros(count, count, dtype=torch.float64)
            model(input_ids=row.unsqueeze(0), use_cache=False)
            gram = state["gram"]
            gram = gram + gram.tril(-1).T
            norms = gram.diagonal().sqrt()
            total += gram / (norms[:, None] * norms[None, :]).clamp_min(1e-30)
    finally:
        for handle in handles:
            handle.remove()
    return total / max(1, len(blocks))


def layer_scores(similarity: torch.Tensor) -> torch.Tensor:
    """Each layer's mean similarity to all the other layers."""
    count = similarity.shape[0]
    return (similarity.sum(1) - similarity.diagonal()) / max(1, count - 1)


def ranked_inner_layers(scores: torch.Tensor) -> list[int]:
    """Layers 1 … L−2 by score, highest first (ties: the earlier layer first)."""
    inner = range(1, len(scores) - 1)
    return sorted(inner, key=lambda layer: (-float(scores[layer]), layer))


def largest_gap_plan(scores: torch.Tensor) -> list[int]:
    """The layers ranked above the largest drop in score between neighbours in the ranking."""
    ranked = ranked_inner_layers(scores)
    if len(ranked) < 2:
        return ranked[:0]
    gaps = [float(scores[a] - scores[b]) for a, b in zip(ranked, ranked[1:])]
    cut = max(range(len(gaps)), key=lambda i: (gaps[i], -i))
    return ranked[:cut + 1]


def ratio_plan(scores: torch.Tensor, ratio: float) -> list[int]:
    """The round(ratio · L) best-ranked inner layers (TinyLlama's 22 layers: 0.41 → 9)."""
    count = len(scores)
    if not 0 <= ratio < 1:
        raise KdxError(f"share ratio {ratio} must lie in [0, 1)", "e.g. 0.41 (the paper's 9 of 22 layers)")
    wanted = round(ratio * count)
    if wanted > count - 2:
        raise KdxError(f"share ratio {ratio} asks for {wanted} of {count} layers, but the first and the last "
                       "layer are never shared", f"use a ratio of at most {(count - 2) / count:.2f}")
    return ranked_inner_layers(scores)[:wanted]


def plan_summary(shared: list[int], count: int) -> dict:
    """The plan as written to JSON: shared layers (in ranking order), their sources, the ratio."""
    return {"shared": list(shared), "ratio": len(shared) / count,
            "sources": {str(k): v for k, v in attention_sources(list(shared), count).items()}}
