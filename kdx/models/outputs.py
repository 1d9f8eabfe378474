"""The forward contract: what a model gives a method.

Every model returns logits; a method that also learns from the inside of the models asks for
hidden states and attention maps (an `OutputRequest`), and gets them for student and teacher
alike in a `ModelOutputs`. Token-level outputs come with their mask, so a loss can average over
real tokens only.

Hugging Face models give all of these (`output_hidden_states`, `output_attentions`). Attention
maps need the eager attention implementation, which `enable_outputs` switches to (the fused
kernels return none), and no attention dropout, which it turns off (transformers returns maps
taken after dropout, which are no longer distributions). Plain PyTorch models (the CIFAR ResNets,
the MLP) return logits only: asking them for more is an error that says so.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from kdx.errors import KdxError


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs beyond logits a method reads."""

    hidden_states: bool = False
    attentions: bool = False

    @property
    def logits_only(self) -> bool:
        return not (self.hidden_states or self.attentions)


LOGITS_ONLY = OutputRequest()


@dataclass
class ModelOutputs:
    logits: torch.Tensor                                   # (B, C), (B, T, V) token-level, (B, 2, T) QA spans
    # HF convention: hidden_states[0] is the embedding output, hidden_states[i + 1] the output of
    # transformer layer i (0-based); each (B, T, H).
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None     # per layer, (B, heads, T, T), post-softmax
    mask: torch.Tensor | None = None                       # (B, T): 1 on real tokens (the attention mask)

    def layer_output(self, layer: int) -> torch.Tensor:
        """The output of transformer layer `layer` (0-based)."""
        return self.hidden_states[layer + 1]


def enable_outputs(model: nn.Module, request: OutputRequest, role: str) -> None:
    """Checks that `model` can give what `request` asks, and, when attention maps are asked for,
    switches a Hugging Face model to eager attention without attention dropout. Idempotent."""
    if request.logits_only:
        return
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "set_attn_implementation"):
        wanted = " and ".join(n for n, on in (("hidden states", request.hidden_states),
                                             ("attention maps", request.attentions)) if on)
        raise KdxError(f"the method reads the {role}'s {wanted}, but the {role} ({type(model).__name__}) "
                       "returns logits only",
                       "use a Hugging Face transformer pair (e.g. model=tiny or model=minilm) with this method")
    if request.attentions:
        if getattr(config, "_attn_implementation", "eager") != "eager":
            model.set_attn_implementation("eager")
        attention_dropout_off(model)


def attention_dropout_off(model: nn.Module) -> None:
    """No dropout on attention probabilities (BERT-style `*Attention.dropout` modules, LLaMA-style
    `attention_dropout` rates), so the returned maps are the softmax distributions themselves."""
    for key in ("attention_probs_dropout_prob", "attention_dropout"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
        if type(module).__name__.endswith("Attention") and isinstance(getattr(module, "dropout", None), nn.Dropout):
            module.dropout.p = 0.0


def forward(model: nn.Module, inputs: dict, request: OutputRequest = LOGITS_ONLY) -> ModelOutputs:
    """One forward pass, returning what `request` asks for."""
    extra = {}
    if request.hidden_states:
        extra["output_hidden_states"] = True
    if request.attentions:
        extra["output_attentions"] = True
    out = model(**inputs, **extra)
    if not hasattr(out, "logits") and not hasattr(out, "start_logits"):   # a plain module: the logits tensor itself
        return ModelOutputs(logits=out)
    logits = span_logits(out, inputs.get("attention_mask")) if hasattr(out, "start_logits") else out.logits
    return ModelOutputs(logits=logits,
                        hidden_states=getattr(out, "hidden_states", None) if request.hidden_states else None,
                        attentions=getattr(out, "attentions", None) if request.attentions else None,
                        mask=inputs.get("attention_mask"))


PADDING_SCORE = -1e4   # a padded position's span score: no probability after any softmax (τ ≤ 100)


def span_logits(out, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Extractive QA heads give start and end scores per token: stacked as (B, 2, T), so that the
    softmax over the last dim is the distribution over answer positions (CE and KD then work as
    for classification), with padded positions set to PADDING_SCORE."""
    logits = torch.stack([out.start_logits, out.end_logits], dim=1)
    if attention_mask is not None:
        logits = logits.masked_fill(~attention_mask.bool().unsqueeze(1), PADDING_SCORE)
    return logits


def logits_of(model: nn.Module, **inputs) -> torch.Tensor:
    return forward(model, inputs).logits


def freeze(model: nn.Module) -> nn.Module:
    """A teacher that no optimizer may change: eval mode, no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
