"""The masked-LM generator of MATE-KD / Combined-KD: a checkpoint (hub id / folder / `pkg:`), or a
small BERT masked LM built from an architecture dict (no download; the default, so the tiny pair
runs offline). Its vocabulary must be the task tokenizer's (checked by the methods)."""

import torch.nn as nn
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

from kdx.models.location import hub_error, resolve


def masked_lm(vocab_size: int | None, name_or_path: str | None = None, arch: dict | None = None) -> nn.Module:
    """`name_or_path` given: that pre-trained masked LM (e.g. BERT-Mini, DistilRoBERTa as in the
    papers); otherwise a randomly initialised BERT masked LM of size `arch` over `vocab_size` tokens."""
    if name_or_path:
        try:
            return AutoModelForMaskedLM.from_pretrained(resolve(name_or_path))
        except (OSError, ValueError) as err:
            raise hub_error(name_or_path, err) from None
    return BertForMaskedLM(BertConfig(vocab_size=vocab_size, **(arch or {})))
