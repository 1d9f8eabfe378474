"""Encoder-decoder generators (T5) behind the generation contract: the wrapper's logits are the
decoder's, teacher-forced on the answer, placed where a causal LM would predict the same tokens;
generation returns the answer alone; checkpoints load through the same builder as causal LMs."""

import pytest
import torch
import torch.nn.functional as F

from kdx.errors import KdxError
from kdx.losses import task_loss
from kdx.models.generate import GenerationSettings, generate
from kdx.models.hf import from_pretrained, t5_from_arch
from kdx.models.seq2seq import Seq2SeqAsDecoder

VOCAB, PAD, EOS = 40, 0, 3
ARCH = dict(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=PAD, eos_token_id=EOS,
            decoder_start_token_id=PAD)
PROMPTS = [[5, 6, 7, EOS], [10, EOS]]
ANSWERS = [[8, 9, EOS], [11, EOS]]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return t5_from_arch(0, VOCAB, **ARCH).eval()


def batch():
    rows = [p + a for p, a in zip(PROMPTS, ANSWERS)]
    longest = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (longest - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
    labels = torch.full_like(ids, -100)
    for b, (p, a) in enumerate(zip(PROMPTS, ANSWERS)):
        labels[b, len(p) - 1:len(p) - 1 + len(a)] = torch.tensor(a)
    return ids, mask, labels


def direct_logits(model, prompt, answer):
    """T5 itself: encoder reads the prompt, decoder reads [start] + answer[:-1]."""
    return model.model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[PAD] + answer[:-1]])).logits[0]


def test_logits_sit_where_a_causal_lm_predicts_the_answer(model):
    ids, mask, labels = batch()
    logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, ids.shape[1], VOCAB)
    picked = []
    for b, (p, a) in enumerate(zip(PROMPTS, ANSWERS)):
        expected = direct_logits(model, p, a)
        torch.testing.assert_close(logits[b, len(p) - 1:len(p) - 1 + len(a)], expected, atol=1e-5, rtol=1e-4)
        picked.append(-F.log_softmax(expected, -1)[torch.arange(len(a)), torch.tensor(a)])
        assert logits[b, :len(p) - 1].abs().sum() == 0 and logits[b, len(p) - 1 + len(a):].abs().sum() == 0
    # the generation family's loss reads exactly the answer tokens
    assert task_loss("generation", logits, labels).item() == pytest.approx(torch.cat(picked).mean().item(), rel=1e-5)


def test_generation_returns_the_answer_alone(model):
    out = generate(model, PROMPTS, GenerationSettings(strategy="greedy", max_new_tokens=4), PAD, EOS)
    for prompt, answer in zip(PROMPTS, out.answers):
        decoder, expected = [PAD], []
        for _ in range(4):   # greedy decoding by hand
            nxt = int(model.model(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([decoder])).logits[0, -1].argmax())
            if nxt == EOS:
                break
            expected.append(nxt)
            decoder.append(nxt)
        assert answer == expected
    assert out.tokens > 0 and out.seconds > 0


def test_a_prompt_without_its_end_token_is_refused(model):
    with pytest.raises(KdxError, match="end-of-sequence"):
        model(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long))


def test_checkpoints_load_as_wrapped_generators(model, tmp_path):
    model.model.save_pretrained(tmp_path / "t5")
    loaded = from_pretrained(str(tmp_path / "t5"), num_labels=0, family="generation").eval()
    assert isinstance(loaded, Seq2SeqAsDecoder)
    ids, mask, _ = batch()
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits,
                               model(input_ids=ids, attention_mask=mask).logits)
    with pytest.raises(KdxError, match="encoder-decoder"):
        from_pretrained(str(tmp_path / "t5"), num_labels=0, family="language_modeling")
