"""Sequence-level KD: the student learns the teacher's greedy answers (decoded by hand here), which
are generated once and read back from the cache; on classification, the teacher's argmax class."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kdx.methods.seq_kd as seq_kd
from kdx.errors import KdxError
from kdx.methods.base import SetupContext
from kdx.methods.seq_kd import SequenceKD
from kdx.models.hf import llama_from_arch
from kdx.tasks.base import TaskSpec
from tests.methods.reference import STUDENT, TEACHER, ce_by_hand, logits_step, train_step

VOCAB, EOS, PAD = 40, 2, 0
ARCH = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=32, max_position_embeddings=64)
MAX_NEW = 5


def test_classification_targets_are_the_teachers_argmax():
    terms = SequenceKD().losses(logits_step(STUDENT, TEACHER, [0, 0, 0, 0]))
    argmax = [max(range(3), key=lambda c: row[c]) for row in TEACHER]
    assert terms["loss"].item() == pytest.approx(ce_by_hand(STUDENT, argmax), rel=1e-5)
    assert terms["seq_ce"].item() == terms["loss"].item()


def greedy_by_hand(model, prompt):
    ids = list(prompt)
    for _ in range(MAX_NEW):
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == EOS:
            break
        ids.append(nxt)
    return ids[len(prompt):]


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return llama_from_arch(0, VOCAB, **ARCH).eval(), llama_from_arch(0, VOCAB, **ARCH)


def generation_batch():
    # prompts [5, 6, 7] and [8, 9]; gold answers [10, 11, EOS] and [12, EOS]; right-padded
    ids = torch.tensor([[5, 6, 7, 10, 11, EOS], [8, 9, 12, EOS, PAD, PAD]])
    labels = torch.tensor([[-100, -100, 10, 11, EOS, -100], [-100, 12, EOS, -100, -100, -100]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "idx": torch.tensor([0, 1])}


def set_up(teacher, student, cache_dir):
    method = SequenceKD(generation={"strategy": "greedy", "max_new_tokens": MAX_NEW})
    tokenizer = SimpleNamespace(eos_token_id=EOS, sep_token_id=None, pad_token_id=PAD)
    spec = TaskSpec("gen", num_labels=VOCAB, metrics=[], main_metric="rougeL", family="generation")
    method.setup(SetupContext(spec=spec, student=student, tokenizer=tokenizer, teacher=teacher, cache_dir=cache_dir))
    return method


def test_generation_trains_on_the_teachers_answers_generated_once(pair, tmp_path, monkeypatch):
    teacher, student = pair
    calls = []
    real = seq_kd.generate
    monkeypatch.setattr(seq_kd, "generate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    method = set_up(teacher, student, tmp_path)
    batch = generation_batch()
    step = train_step(batch, student, teacher)
    step.family = "generation"
    rebuilt = method.teacher_batch(step)
    answers = [greedy_by_hand(teacher, [5, 6, 7]), greedy_by_hand(teacher, [8, 9])]
    for row, prompt, answer, ids, labels in zip(range(2), ([5, 6, 7], [8, 9]), answers,
                                               rebuilt["input_ids"].tolist(), rebuilt["labels"].tolist()):
        n = len(prompt) + len(answer) + 1
        assert ids[:n] == prompt + answer + [EOS]
        assert labels[:n] == [-100] * (len(prompt) - 1) + answer + [EOS] + [-100]
        assert rebuilt["attention_mask"][row].sum() == n
    assert calls == [2]

    terms = method.losses(step)
    logits = student(input_ids=rebuilt["input_ids"], attention_mask=rebuilt["attention_mask"]).logits
    labels = rebuilt["labels"]
    keep = labels != -100
    expected = -F.log_softmax(logits, -1)[keep].gather(-1, labels[keep][:, None]).mean()
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert calls == [2]                                      # the second pass read the memory

    again = set_up(teacher, student, tmp_path)               # a new trial with the same teacher
    assert again.teacher_batch(step)["input_ids"].tolist() == rebuilt["input_ids"].tolist()
    assert calls == [2] and len(list((tmp_path / "seq_kd").glob("*.json"))) == 1


def test_language_modelling_is_refused(pair):
    teacher, student = pair
    spec = TaskSpec("lm", num_labels=VOCAB, metrics=[], main_metric="perplexity", family="language_modeling")
    with pytest.raises(KdxError, match="token_kd"):
        SequenceKD().setup(SetupContext(spec=spec, student=student, teacher=teacher))
