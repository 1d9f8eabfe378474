"""The EchoAtt student (Rajabzadeh et al., 2024; docs/methods.md §7): a LLaMA-family causal LM in
which some layers stop computing attention and reuse the post-softmax attention of the nearest
earlier layer that still computes its own.

A shared layer keeps its value and output projections (and its MLP and norms) and drops its query
and key projections: `out = o_proj(A_src · V_j)`. Every other weight is the teacher's, so the
student is the teacher minus those projections; with no shared layer it *is* the teacher.

How the maps travel: the attention module of every source layer is wrapped by `SourceAttention`,
which runs it (eager attention, so it returns its probabilities) and leaves the probabilities in
an `AttentionRelay`; the `SharedAttention` modules later in the same forward pass read them there.
The relay is a plain object outside the module tree (no state, nothing checkpointed) and drops a
map as soon as its last reader took it.

Masks: a shared layer never builds a mask of its own: the source's probabilities already hold the
causal and padding masks (and a sliding window, where the architecture has one), and they are
exactly zero on every masked position.

KV cache: a shared layer caches only its values (its cache entry has zero-width keys), and at each
generation step multiplies the source's probabilities over the whole cached length with them.
"""

import torch
import torch.nn as nn

from kdx.errors import KdxError

SHARED_KEY = "echoatt_shared"     # the model attribute that records the student's shared layers


class AttentionRelay:
    """Post-softmax attention of the source layers within one forward pass."""

    def __init__(self, readers: dict[int, int]):
        self.readers = dict(readers)      # source layer -> how many shared layers read it
        self.maps: dict[int, list] = {}

    def put(self, source: int, probabilities: torch.Tensor) -> None:
        self.maps[source] = [probabilities, self.readers[source]]

    def take(self, source: int) -> torch.Tensor:
        if source not in self.maps:
            raise RuntimeError(f"EchoAtt: layer {source}'s attention was not computed before a layer sharing it "
                               "(layers must run in order, with eager attention)")
        entry = self.maps[source]
        entry[1] -= 1
        if entry[1] == 0:
            del self.maps[source]
        return entry[0]


class SourceAttention(nn.Module):
    """A layer that computes attention for itself and for the shared layers after it."""

    def __init__(self, attention: nn.Module, layer: int, relay: AttentionRelay):
        super().__init__()
        self.attention = attention
        self.layer = layer
        self.__dict__["relay"] = relay

    def forward(self, *args, **kwargs):
        output, probabilities = self.attention(*args, **kwargs)
        if probabilities is None:
            raise RuntimeError("EchoAtt: a source layer returned no attention probabilities; the model must "
                               "use eager attention (config._attn_implementation='eager')")
        self.relay.put(self.layer, probabilities)
        return output, probabilities


def repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, kv_heads, T, d) -> (B, kv_heads·groups, T, d): each key/value head serves `groups`
    query heads (grouped-query attention)."""
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


class SharedAttention(nn.Module):
    """A layer that reuses layer `source`'s attention: its own V and O projections only."""

    def __init__(self, attention: nn.Module, source: int, relay: AttentionRelay):
        super().__init__()
        self.v_proj = attention.v_proj
        self.o_proj = attention.o_proj
        self.head_dim = attention.head_dim
        self.groups = attention.num_key_value_groups
        self.layer_idx = attention.layer_idx
        self.source = source
        self.__dict__["relay"] = relay

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        batch, length = hidden_states.shape[:2]
        values = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        if cache is not None:
            # Only V is cached: the keys of this layer have zero width (no memory).
            _, values = cache.update(values[..., :0], values, self.layer_idx)
        probabilities = self.relay.take(self.source)               # (B, heads, T, T_cached)
        mixed = torch.matmul(probabilities.to(values.dtype), repeat_heads(values, self.groups))
        output = self.o_proj(mixed.transpose(1, 2).reshape(batch, length, -1))
        return output, probabilities


def attention_sources(shared: list[int], num_layers: int) -> dict[int, int]:
    """Shared layer -> the nearest earlier layer that computes its own attention."""
    sources = {}
    for layer in sorted(shared):
        source = layer - 1
        while source in shared:
            source -= 1
        sources[layer] = source
    return sources


def check_plan(shared, num_layers: int, where: str = "model.student.share") -> list[int]:
    """The shared layers as a sorted list, after checking them against the model's depth."""
    try:
        layers = [int(x) for x in shared]
    except (TypeError, ValueError):
        raise KdxError(f"{where}={shared!r} is not a list of layer indices",
                       f"give e.g. {where}=[3,4,5]") from None
    bad = [x for x in layers if not 0 < x < num_layers - 1]
    if bad:
        raise KdxError(f"{where}={layers}: layers {bad} cannot be shared in a {num_layers}-layer model",
                       f"share only inner layers 1 … {num_layers - 2}: the first and the last layer always "
                       "compute their own attention")
    if len(set(layers)) != len(layers):
        raise KdxError(f"{where}={layers} names a layer twice", "list each shared layer once")
    return sorted(layers)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder stack of a LLaMA/Mistral/Qwen-style causal LM (`model.layers`)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(hasattr(layer, "self_attn") for layer in layers):
        raise KdxError(f"EchoAtt needs a LLaMA-style causal LM (model.layers[i].self_attn); got {type(model).__name__}",
                       "use a LlamaForCausalLM, MistralForCausalLM or Qwen2/Qwen3ForCausalLM checkpoint")
    return layers


def check_attention(model: nn.Module, attention: nn.Module) -> None:
    missing = [name for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "num_key_value_groups")
               if not hasattr(attention, name)]
    if missing:
        raise KdxError(f"the attention of {type(model).__name__} ({type(attention).__name__}) has no {missing}",
                       "EchoAtt shares attention of LLaMA-style layers with separate q/k/v/o projections")


def share_attention(model: nn.Module, shared) -> nn.Module:
    """Turns `model` (in place) into the EchoAtt student sharing the attention of layers `shared`.
    The query/key projections of those layers (and any q/k norms) leave the model."""
    layers = decoder_layers(model)
    if shared_layers(model):
        raise KdxError(f"{type(model).__name__} already shares the attention of layers {shared_layers(model)}",
                       "start from the unshared teacher")
    plan = check_plan(shared, len(layers))
    check_attention(model, layers[0].self_attn)
    setattr(model, SHARED_KEY, plan)
    if not plan:
        return model
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")      # the sources must return their probabilities
    sources = attention_sources(plan, len(layers))
    readers = {}
    for source in sources.values():
        readers[source] = readers.get(source, 0) + 1
    relay = AttentionRelay(readers)
    for layer, source in sources.items():
        layers[layer].self_attn = SharedAttention(layers[layer].self_attn, source, relay)
    for source in readers:
        layers[source].self_attn = SourceAttention(layers[source].self_attn, source, relay)
    return model


def shared_layers(model: nn.Module) -> list[int]:
    """The layers of `model` that reuse an earlier layer's attention ([] for an ordinary model)."""
    return list(getattr(model, SHARED_KEY, None) or [])


def shared_blocks(shared: list[int]) -> list[list[int]]:
    """Runs of consecutive shared layers: [2,3,4,7] -> [[2,3,4],[7]]."""
    blocks: list[list[int]] = []
    for layer in sorted(shared):
        if blocks and blocks[-1][-1] == layer - 1:
            blocks[-1].append(layer)
        else:
            blocks.append([layer])
    return blocks
