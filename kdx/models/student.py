"""Building the teacher and the student from their config specs.

A spec is a dict with a `_target_` builder (kdx.models.hf.*, or any callable taking
`num_labels` and `vocab_size`) plus kdx's own keys, stripped before the builder is called:

- `init` (student only): `pretrained` (the builder's weights), `truncated` (every k-th layer of
  the teacher, DistilBERT-style; k = `layer_stride`), or `random` (the same architecture, freshly
  initialised);
- `truncate_from`: truncate the `pretrained` teacher (before fine-tuning, as DistilBERT) or the
  `finetuned` one;
- `finetuned` / `checkpoint` (teacher only): see kdx/teacher.py.
"""

import copy
import re

import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError

KDX_KEYS = ("init", "layer_stride", "truncate_from", "finetuned", "checkpoint", "description")
STUDENT_INITS = ("pretrained", "truncated", "random")
# `...layer.3.attention...` (BERT), `...layers.3...` (LLaMA, RoBERTa-style), `...h.3...` (GPT-2)
LAYER_KEY = re.compile(r"^(.*?\.(?:layer|layers|h))\.(\d+)\.(.*)$")


def build(spec: DictConfig, num_labels: int, vocab_size: int | None, random_init: bool = False) -> nn.Module:
    """Instantiate a model spec; `random_init` keeps the architecture but drops pre-trained weights."""
    params = {k: v for k, v in OmegaConf.to_container(spec, resolve=True).items() if k not in KDX_KEYS}
    if random_init and params.get("_target_") == "kdx.models.hf.from_pretrained":
        params["_target_"] = "kdx.models.hf.from_config_of"
    return instantiate(params, num_labels=num_labels, vocab_size=vocab_size, _convert_="all")


def build_student(spec: DictConfig, num_labels: int, vocab_size: int | None,
                  teacher_factory=None) -> nn.Module:
    """The student per `spec.init`; `teacher_factory(which)` returns the pre-trained or the
    fine-tuned teacher for truncation."""
    init = spec.get("init", "pretrained")
    if init not in STUDENT_INITS:
        raise KdxError(f"model.student.init={init!r} is not one of {list(STUDENT_INITS)}",
                       "set model.student.init=pretrained|truncated|random")
    if init == "truncated":
        if teacher_factory is None:
            raise KdxError("model.student.init=truncated needs a teacher to truncate, but this pair has none",
                           "use model.student.init=pretrained or random, or a pair with a teacher")
        source = teacher_factory(spec.get("truncate_from", "pretrained"))
        return truncate(source, int(spec.get("layer_stride", 2)))
    return build(spec, num_labels, vocab_size, random_init=(init == "random"))


def layer_count(model: nn.Module) -> int:
    indices = {int(m.group(2)) for key in model.state_dict() if (m := LAYER_KEY.match(key))}
    return len(indices)


def truncate(teacher: nn.Module, stride: int) -> nn.Module:
    """A copy of `teacher` keeping layers 0, k, 2k, ... (DistilBERT keeps every second layer)."""
    if not hasattr(teacher, "config"):
        raise KdxError(f"student init 'truncated' needs a Hugging Face model; got {type(teacher).__name__}",
                       "use model.student.init=random or pretrained for this pair")
    total = teacher.config.num_hidden_layers
    kept = list(range(0, total, stride))
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(kept)
    student = type(teacher)(config)
    source = teacher.state_dict()
    target = {}
    for key in student.state_dict():
        m = LAYER_KEY.match(key)
        source_key = f"{m.group(1)}.{kept[int(m.group(2))]}.{m.group(3)}" if m else key
        target[key] = source[source_key].clone()
    student.load_state_dict(target)
    return student


def parameter_count(model: nn.Module | None) -> int | None:
    return None if model is None else sum(p.numel() for p in model.parameters())
