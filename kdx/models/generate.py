"""Batched answer generation with a key-value cache, for any generation-family model: a Hugging
Face causal LM (prompts left-padded, the prompt cut off the output) or an encoder-decoder wrapped
by kdx/models/seq2seq.py (whose `generate` returns the answer alone).

Settings (`GenerationSettings`, from a task's or a method's config): greedy, beam search or
sampling, and the number of new tokens. Sampling draws from its own seeded generator state, so it
neither depends on nor disturbs the training random state.
"""

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from kdx.errors import KdxError

STRATEGIES = ("greedy", "beam", "sampling")


@dataclass(frozen=True)
class GenerationSettings:
    strategy: str = "greedy"        # greedy | beam | sampling
    max_new_tokens: int = 128
    num_beams: int = 4              # beam only
    temperature: float = 1.0        # sampling only
    top_p: float = 1.0              # sampling only (1: no nucleus cut)
    top_k: int = 0                  # sampling only (0: no top-k cut)
    seed: int = 0                   # sampling only

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise KdxError(f"generation strategy {self.strategy!r} is unknown", f"use one of {list(STRATEGIES)}")
        if self.max_new_tokens < 1:
            raise KdxError(f"max_new_tokens={self.max_new_tokens} generates nothing", "use at least 1")
        if self.strategy == "beam" and self.num_beams < 2:
            raise KdxError(f"beam search with num_beams={self.num_beams}", "use num_beams >= 2, or strategy=greedy")

    def hf_arguments(self) -> dict:
        if self.strategy == "greedy":
            return {"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None}
        if self.strategy == "beam":
            return {"do_sample": False, "num_beams": self.num_beams, "early_stopping": True,
                    "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "num_beams": 1, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k or None}


@dataclass
class Generated:
    answers: list[list[int]]      # per prompt: the answer's token ids, without the end token
    tokens: int                   # tokens produced (end tokens included, padding not)
    seconds: float


def generation_config(model: nn.Module, settings: GenerationSettings, pad_id: int, eos_id: int):
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=settings.max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
                  use_cache=True, max_length=None, **settings.hf_arguments())
    return config


def pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = [[pad_id] * (longest - len(r)) + r if left else r + [pad_id] * (longest - len(r)) for r in rows]
    mask = [[0] * (longest - len(r)) + [1] * len(r) if left else [1] * len(r) + [0] * (longest - len(r))
            for r in rows]
    return torch.tensor(ids), torch.tensor(mask)


def until_end(ids: list[int], eos_id: int) -> tuple[list[int], int]:
    """The answer before the first end token, and how many tokens were produced (with the end).
    A row padded after its end is cut there; a row without an end ran to max_new_tokens."""
    if eos_id in ids:
        cut = ids.index(eos_id)
        return ids[:cut], cut + 1
    return ids, len(ids)


@torch.no_grad()
def generate(model: nn.Module, prompts: list[list[int]], settings: GenerationSettings, pad_id: int,
             eos_id: int) -> Generated:
    """Answers to `prompts` (token ids) in one batch."""
    device = next(model.parameters()).device
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False)
    input_ids, mask = pad(prompts, pad_id, left=not encoder_decoder)
    config = generation_config(model, settings, pad_id, eos_id)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                generation_config=config)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    new = output if encoder_decoder else output[:, input_ids.shape[1]:]
    answers, tokens = [], 0
    for row in new.tolist():
        answer, produced = until_end(row, eos_id)
        answers.append(answer)
        tokens += produced
    return Generated(answers, tokens, seconds)
