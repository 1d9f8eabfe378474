"""Encoder-decoder LMs (the T5 family) under the generation family's batch contract.

A generation batch holds `input_ids = prompt + answer` and wants logits (B, T, V) where position t
predicts token t + 1 (kdx/tasks/families.py). The wrapper splits every row after the prompt — the
prompt ends with the end-of-sequence token, as a T5 tokenizer writes a single text, and the
generation tasks always end it so — feeds the prompt to the encoder and the answer, teacher-forced,
to the decoder, and places the decoder's logits at the positions that predict the answer:
position (prompt length − 1 + j) predicts answer token j, exactly as in a causal LM. Positions
that predict nothing (the prompt, padding) get zero logits; no loss reads them.

So methods, losses and the teacher store treat an encoder-decoder like any other generator.
"""

import torch
import torch.nn as nn
from transformers.modeling_outputs import CausalLMOutput

from kdx.errors import KdxError


class Seq2SeqAsDecoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def generation_config(self):
        return self.model.generation_config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def prompt_lengths(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per row, the prompt length: up to and including the first end-of-sequence token."""
        is_end = input_ids == self.config.eos_token_id
        if not bool(is_end.any(dim=1).all()):
            raise KdxError("an encoder-decoder input row has no end-of-sequence token closing its prompt",
                           "generation tasks must end every prompt with the tokenizer's end token")
        return is_end.int().argmax(dim=1) + 1

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(dim=1)
        prompt = self.prompt_lengths(input_ids)
        answer = (lengths - prompt).clamp_min(0)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        encoder_len = int(prompt.max())
        encoder_mask = (positions[:encoder_len][None, :] < prompt[:, None]).long()
        pad = self.config.pad_token_id
        width = max(1, int(answer.max()))
        start = torch.full((input_ids.shape[0], 1), self.config.decoder_start_token_id, device=input_ids.device)
        decoder_ids = torch.full((input_ids.shape[0], width), pad, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            p, n = int(prompt[row]), int(answer[row])
            decoder_ids[row, :n] = input_ids[row, p:p + n]
        decoder_input = torch.cat([start, decoder_ids[:, :-1]], dim=1)   # shifted right
        decoder_mask = (torch.arange(width, device=input_ids.device)[None, :] < answer[:, None]).long()
        decoder_mask[:, 0] = 1
        logits = self.model(input_ids=input_ids[:, :encoder_len] * encoder_mask + pad * (1 - encoder_mask),
                            attention_mask=encoder_mask, decoder_input_ids=decoder_input,
                            decoder_attention_mask=decoder_mask).logits
        placed = logits.new_zeros(input_ids.shape[0], input_ids.shape[1], logits.shape[-1])
        for row in range(input_ids.shape[0]):
            p, n = int(prompt[row]), int(answer[row])
            placed[row, p - 1:p - 1 + n] = logits[row, :n]
        return CausalLMOutput(logits=placed)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config):
        """The answers alone (the decoder's start token dropped)."""
        return self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                   generation_config=generation_config)[:, 1:]
