"""Building the teacher and the student from their config specs.

A spec is a dict with a `_target_` builder (kdx.models.hf.*, or any callable taking
`num_labels` and `vocab_size`) plus kdx's own keys, stripped before the builder is called:

- `init` (student only): `pretrained` (the builder's weights), `truncated` (layers 0, k, 2k, ...
  of the teacher, DistilBERT-style, with its embeddings, pooler and head; k = `layer_stride`),
  `random` (the same architecture, freshly initialised), or `shared` (the teacher with some
  layers reusing an earlier layer's attention, EchoAtt; kdx/models/echoatt.py);
- `resize` (with init=random): architecture overrides for a fresh smaller stack, e.g.
  `{num_hidden_layers: 3, hidden_size: 192, intermediate_size: 768}`;
- `truncate_from`: truncate the `pretrained` teacher (before fine-tuning, as DistilBERT) or the
  `finetuned` one (init=shared: the teacher the EchoAtt student is made from);
- `share` / `share_ratio` / `similarity_file` / `analysis` (init=shared): which layers of the teacher
  reuse an earlier layer's attention (kdx/models/echoatt_plan.py);
- `finetuned` / `checkpoint` (teacher only): see kdx/store.py.
"""

import copy

import torch.nn as nn
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from kdx.components import settings_of
from kdx.errors import KdxError

KDX_KEYS = ("init", "layer_stride", "truncate_from", "resize", "finetuned", "checkpoint", "description",
            "share", "share_ratio", "similarity_file", "analysis")
STUDENT_INITS = ("pretrained", "truncated", "random", "shared")
# Builders that load weights, and the builder that gives the same architecture without them.
RANDOM_COUNTERPART = {"kdx.models.hf.from_pretrained": "kdx.models.hf.from_config_of"}
# Builders whose models are freshly initialised already.
RANDOM_BUILDERS = ("kdx.models.hf.from_config_of", "kdx.models.hf.bert_from_arch", "kdx.models.hf.llama_from_arch",
                   "kdx.models.hf.t5_from_arch")
# Config entries with one value per layer, which truncation must subset like the layers.
PER_LAYER_CONFIG_KEYS = ("layer_types",)


def build(spec: DictConfig, num_labels: int, vocab_size: int | None, random_init: bool = False,
          family: str = "classification") -> nn.Module:
    """Instantiate a model spec with the head of the task's `family`; `random_init` keeps the
    architecture (resized by `resize`) but drops pre-trained weights."""
    params = {k: v for k, v in OmegaConf.to_container(spec, resolve=True).items() if k not in KDX_KEYS}
    target = params.get("_target_")
    if random_init:
        params.update(spec.get("resize") or {})
        params["_target_"] = RANDOM_COUNTERPART.get(target, target)
    model = instantiate(params, num_labels=num_labels, vocab_size=vocab_size, _convert_="all",
                        **family_argument(params["_target_"], family))
    return model if not random_init or params["_target_"] in RANDOM_BUILDERS else reinitialised(model)


def family_argument(target: str, family: str) -> dict:
    """Builders that can make several heads take `family`; the others build sequence-level models
    only (a CIFAR ResNet, the MLP), which a token-level task cannot use."""
    if "family" in (settings_of(get_method(target)) or ["family"]):
        return {"family": family}
    if family not in ("classification", "regression"):
        raise KdxError(f"model builder {target} makes sequence-level models, but the task is {family}",
                       "use a Hugging Face pair (kdx.models.hf builders) for token-level tasks")
    return {}


def reinitialised(model: nn.Module) -> nn.Module:
    """A freshly initialised model of the same architecture, for builders of unknown provenance."""
    if isinstance(model, PreTrainedModel):
        return type(model)(model.config)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def build_student(spec: DictConfig, num_labels: int, vocab_size: int | None,
                  teacher_factory=None, family: str = "classification") -> nn.Module:
    """The student per `spec.init`; `teacher_factory(which)` returns the pre-trained or the
    fine-tuned teacher for truncation."""
    init = spec.get("init", "pretrained")
    if init not in STUDENT_INITS:
        raise KdxError(f"model.student.init={init!r} is not one of {list(STUDENT_INITS)}",
                       "set model.student.init=pretrained|truncated|random")
    if spec.get("resize") and init != "random":
        raise KdxError(f"model.student.resize={OmegaConf.to_container(spec.resize)} changes the architecture, "
                       f"so it only works with init=random (it is {init!r})",
                       "set model.student.init=random, or drop model.student.resize")
    if init in ("truncated", "shared"):
        if teacher_factory is None:
            raise KdxError(f"model.student.init={init} needs a teacher to start from, but this pair has none",
                           "use model.student.init=pretrained or random, or a pair with a teacher")
        which = spec.get("truncate_from", "pretrained")
        if which not in ("pretrained", "finetuned"):
            raise KdxError(f"model.student.truncate_from={which!r} is not pretrained or finetuned",
                           "set model.student.truncate_from=pretrained|finetuned")
        if init == "shared":
            from kdx.models.echoatt_plan import shared_student

            teacher = teacher_factory(which)
            return shared_student(copy.deepcopy(teacher) if which == "finetuned" else teacher, spec)
        return truncate(teacher_factory(which), int(spec.get("layer_stride", 2)), spec.get("layers"))
    return build(spec, num_labels, vocab_size, random_init=(init == "random"), family=family)


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's stack of layers: the one ModuleList with `num_hidden_layers` entries
    (`bert.encoder.layer`, `roberta.encoder.layer`, `distilbert.transformer.layer`,
    `model.layers` in LLaMA, `transformer.h` in GPT-2)."""
    total = getattr(model.config, "num_hidden_layers", None)
    stacks = [(name, m) for name, m in model.named_modules()
              if isinstance(m, nn.ModuleList) and len(m) == total and total]
    if len(stacks) != 1:
        found = [name for name, _ in stacks] or "none"
        raise KdxError(f"cannot truncate {type(model).__name__}: expected one stack of "
                       f"num_hidden_layers={total} layers, found {found}",
                       "use model.student.init=pretrained or random for this architecture")
    return stacks[0]


def truncate(teacher: nn.Module, stride: int, layers=None) -> nn.Module:
    """A copy of `teacher` keeping layers 0, k, 2k, ... (DistilBERT keeps every second layer), or
    the listed `layers` (model.*.layers, e.g. [0, 2, 3, 5]: a depth no stride gives); everything
    outside the layer stack (embeddings, pooler, head) is copied as is."""
    if not isinstance(teacher, PreTrainedModel):
        raise KdxError(f"student init 'truncated' needs a Hugging Face model; got {type(teacher).__name__}",
                       "use model.student.init=random or pretrained for this pair")
    prefix, stack = layer_stack(teacher)
    total = len(stack)
    if stride < 1:
        raise KdxError(f"model.student.layer_stride={stride} cannot truncate the {total}-layer teacher",
                       f"choose a stride of at least 1 (2 halves the depth, as DistilBERT; "
                       f"{total} or more keeps only layer 0)")
    kept = list(range(0, total, stride))
    if layers is not None:
        kept = [int(i) for i in layers]
        if not kept or kept != sorted(set(kept)) or not all(0 <= i < total for i in kept):
            raise KdxError(f"layers={kept} must be increasing indices of the teacher's {total} layers",
                           f"list layers among 0..{total - 1}, e.g. [0, 2, 3, 5]")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(kept)
    for key in PER_LAYER_CONFIG_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == total:
            setattr(config, key, [values[i] for i in kept])
    student = type(teacher)(config)
    source = teacher.state_dict()
    layer_prefix = prefix + "."
    target = {}
    for key in student.state_dict():
        if key.startswith(layer_prefix):
            index, rest = key[len(layer_prefix):].split(".", 1)
            key_in_teacher = f"{layer_prefix}{kept[int(index)]}.{rest}"
        else:
            key_in_teacher = key
        target[key] = source[key_in_teacher].clone()
    student.load_state_dict(target)
    return student


def parameter_count(model: nn.Module | None) -> int | None:
    return None if model is None else sum(p.numel() for p in model.parameters())
