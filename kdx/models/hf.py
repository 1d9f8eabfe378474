"""Hugging Face sequence classifiers: from a checkpoint (hub id / folder / package) or built from
an architecture dict without any download (the tiny BERT pair)."""

import torch.nn as nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, \
    BertForSequenceClassification

from kdx.errors import KdxError
from kdx.models.location import hub_error, resolve


def problem_type(num_labels: int) -> str:
    return "regression" if num_labels == 1 else "single_label_classification"


def bert_from_arch(num_labels: int, vocab_size: int, **arch) -> nn.Module:
    """A randomly initialised BERT classifier of the given size (hidden_size, layers, heads, ...)."""
    config = BertConfig(vocab_size=vocab_size, num_labels=num_labels,
                        problem_type=problem_type(num_labels), **arch)
    return BertForSequenceClassification(config)


def load_config(name_or_path: str, num_labels: int):
    location = resolve(name_or_path)
    try:
        return AutoConfig.from_pretrained(location, num_labels=num_labels,
                                          problem_type=problem_type(num_labels))
    except OSError as err:
        raise hub_error(name_or_path, err) from None


def check_head_size(name_or_path: str, num_labels: int) -> None:
    """A checkpoint that already has a classification head must match the task's label count."""
    try:
        original = AutoConfig.from_pretrained(resolve(name_or_path))
    except OSError as err:
        raise hub_error(name_or_path, err) from None
    has_head = any(a.endswith("ForSequenceClassification") for a in original.architectures or [])
    if has_head and original.num_labels != num_labels:
        raise KdxError(
            f"checkpoint {name_or_path!r} has a classification head with {original.num_labels} labels, "
            f"but the task has {num_labels}",
            "use a checkpoint fine-tuned on this task, or its pre-trained base model (no head)",
        )


def from_pretrained(name_or_path: str, num_labels: int, vocab_size: int | None = None,
                    **_) -> nn.Module:
    """A classifier with pre-trained encoder weights (a new head if the checkpoint has none).

    A checkpoint whose head has a different number of labels is an error unless it has no head.
    """
    location = resolve(name_or_path)
    check_head_size(name_or_path, num_labels)
    config = load_config(name_or_path, num_labels)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(location, config=config)
    except OSError as err:
        raise hub_error(name_or_path, err) from None
    return model


def from_config_of(name_or_path: str, num_labels: int, vocab_size: int | None = None,
                   **overrides) -> nn.Module:
    """The checkpoint's architecture (optionally resized via overrides), randomly initialised."""
    config = load_config(name_or_path, num_labels)
    for key, value in overrides.items():
        setattr(config, key, value)
    return AutoModelForSequenceClassification.from_config(config)
