"""Batched generation (kdx/models/generate.py): left-padded prompts of a decoder-only model give
the same answers as decoding each prompt alone by hand; beam search and sampling follow their
settings; sampling is seeded and leaves the global random state alone."""

import pytest
import torch

from kdx.errors import KdxError
from kdx.models.generate import GenerationSettings, generate
from kdx.models.hf import llama_from_arch

VOCAB, PAD, EOS = 50, 0, 2
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return llama_from_arch(0, VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, intermediate_size=32, max_position_embeddings=64,
                           initializer_range=0.5).eval()


def greedy_by_hand(model, prompt, steps):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == EOS:
                break
            ids.append(nxt)
    return ids[len(prompt):]


def test_batched_greedy_equals_decoding_each_prompt_alone(model):
    out = generate(model, PROMPTS, GenerationSettings(strategy="greedy", max_new_tokens=6), PAD, EOS)
    assert out.answers == [greedy_by_hand(model, p, 6) for p in PROMPTS]
    assert out.tokens == sum(len(a) + (len(a) < 6) for a in out.answers) and out.seconds > 0


def test_beam_search_batched_equals_one_prompt_at_a_time(model):
    settings = GenerationSettings(strategy="beam", num_beams=3, max_new_tokens=5)
    batched = generate(model, PROMPTS, settings, PAD, EOS).answers
    assert batched == [generate(model, [p], settings, PAD, EOS).answers[0] for p in PROMPTS]


def test_sampling_is_seeded_and_leaves_the_global_random_state_alone(model):
    settings = GenerationSettings(strategy="sampling", max_new_tokens=8, temperature=1.5, seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generate(model, PROMPTS, settings, PAD, EOS).answers
    assert torch.rand(1) == before
    assert generate(model, PROMPTS, settings, PAD, EOS).answers == first
    other = generate(model, PROMPTS, GenerationSettings(strategy="sampling", max_new_tokens=8, temperature=1.5,
                                                        seed=4), PAD, EOS).answers
    assert other != first


@pytest.mark.parametrize("kwargs, words", [({"strategy": "nucleus"}, "unknown"), ({"max_new_tokens": 0}, "nothing"),
                                           ({"strategy": "beam", "num_beams": 1}, "num_beams")])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(KdxError, match=words):
        GenerationSettings(**kwargs)
