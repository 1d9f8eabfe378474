"""Citation, ROUGE-L, BLEU and NLI-attribution scores of generated answers, against values worked
out by hand in the comments."""

import re

import pytest

from kdx.errors import KdxError
from kdx.tasks.answer_metrics import Scored, attribution, bleu, citation_metrics, entailment_label, rouge_l, \
    score_answers, sentences
from kdx.tasks.citations import best_citation_score, citation_score, cited_ids, invalid_citations, strip_citations

QUOTES = {1: "q1", 2: "q2", 3: "q3"}


@pytest.mark.parametrize("text, ids", [
    ("Canberra [1].", {1}), ("Both [1, 2].", {1, 2}), ("Both [1][3].", {1, 3}), ("Spaces [ 2 ].", set()),
    ("Tight [2,3] and [1 , 2].", {1, 2, 3}), ("Nothing cited.", set()), ("Year [2020] too [1].", {2020, 1}),
])
def test_cited_ids(text, ids):
    assert cited_ids(text) == ids


def test_strip_citations_removes_markers_and_their_spaces():
    assert strip_citations("It is Canberra [1]. Sydney is bigger [1, 2][3].") == "It is Canberra. Sydney is bigger."
    assert strip_citations("No markers here.") == "No markers here."


@pytest.mark.parametrize("answer, gold, precision, recall, f1", [
    ("A [1].", "B [1].", 1.0, 1.0, 1.0),
    ("A [1, 2].", "B [1].", 1 / 2, 1.0, 2 / 3),          # one of two cited is right; the one gold is found
    ("A [1][3].", "B [1, 2].", 1 / 2, 1 / 2, 1 / 2),     # {1,3} vs {1,2}: one hit each way
    ("A [7].", "B [1].", 0.0, 0.0, 0.0),                 # a quote the query does not have: cited and wrong
    ("A.", "B [1].", 0.0, 0.0, 0.0),                     # no citation: counted, scores zero
    ("A.", "B.", 1.0, 1.0, 1.0),                         # nothing to cite and nothing cited
    ("A [2].", "B.", 0.0, 1.0, 0.0),                     # cites where the reference cites nothing
])
def test_citation_score_cases(answer, gold, precision, recall, f1):
    score = citation_score(cited_ids(answer), cited_ids(gold))
    assert (score.precision, score.recall) == pytest.approx((precision, recall))
    assert score.f1 == pytest.approx(f1)


def test_the_best_reference_is_the_one_with_the_highest_f1_first_on_ties():
    assert best_citation_score("A [1, 2].", ["B [1].", "C [1, 2]."]).f1 == 1.0
    tie = best_citation_score("A [1].", ["B [1, 2].", "C [1, 3]."])
    assert (tie.precision, tie.recall) == (1.0, 0.5)


def test_invalid_citations_are_the_ids_of_absent_quotes():
    assert invalid_citations("A [1][7]. B [2, 9].", set(QUOTES)) == {7, 9}


def test_split_citation_metrics_count_uncited_answers():
    items = [Scored("A [1, 2].", ["B [1]."], QUOTES),   # P 1/2, R 1, F1 2/3
             Scored("A.", ["B [1]."], QUOTES),          # uncited: P 0, R 0, F1 0
             Scored("A [1][7].", ["B [1, 3]."], QUOTES)]  # {1,7} vs {1,3}: P 1/2, R 1/2, F1 1/2; 7 is invalid
    metrics = citation_metrics(items)
    assert metrics["citation_precision"] == pytest.approx((1 / 2 + 0 + 1 / 2) / 3)
    assert metrics["citation_recall"] == pytest.approx((1 + 0 + 1 / 2) / 3)
    assert metrics["citation_f1"] == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)
    assert metrics["uncited"] == pytest.approx(1 / 3)
    assert metrics["invalid_citations"] == pytest.approx(1 / 4)   # 1 of the 4 cited ids names no quote


def test_rouge_l_is_the_lcs_f_measure_against_the_best_reference():
    # "the cat sat on the mat" vs "the cat lay on the mat": LCS 5 of 6 tokens both ways -> F = 5/6
    one = Scored("The cat sat on the mat [1].", ["The cat lay on the mat [2]."])
    assert rouge_l([one]) == pytest.approx(5 / 6)
    # with a second, identical reference the best one scores 1; mean over two queries
    two = Scored("A dog barked [1].", ["Something else entirely.", "A dog barked."])
    assert rouge_l([one, two]) == pytest.approx((5 / 6 + 1) / 2)


def test_bleu_by_hand():
    # hyp "the cat sat on the mat", ref "the cat sat on a mat": n-gram precisions 5/6, 3/5, 2/4, 1/3,
    # equal lengths (no brevity penalty): BLEU = 100 * (5/6 * 3/5 * 1/2 * 1/3) ** (1/4)
    item = Scored("the cat sat on the mat [1]", ["the cat sat on a mat [1, 2]"])
    assert bleu([item]) == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)


def test_bleu_pads_missing_references_without_changing_the_score():
    many = Scored("the cat sat on the mat", ["the cat sat on a mat", "a cat is on the mat"])
    few = Scored("a dog ran in the park today", ["a dog ran in a park today"])
    duplicated = Scored(few.answer, [few.references[0], few.references[0]])   # same refs, no padding
    assert bleu([many, few]) == pytest.approx(bleu([many, duplicated]))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def subset_judge(pairs):
    """Entailed iff every word of the hypothesis is in the premise (a transparent stand-in)."""
    return [words(hypothesis) <= words(premise) for premise, hypothesis in pairs]


def test_sentences_keep_citations_written_after_the_full_stop():
    assert sentences("A is b [1]. C is d. [2] E.") == ["A is b [1].", "C is d [2].", "E."]


def test_nli_attribution_share_of_entailed_sentences():
    quotes = {1: "Canberra is the capital of Australia.", 2: "Sydney is a city."}
    # sentence 1 entailed by quote 1; sentence 2 "big" is not in quote 2; sentence 3 cites nothing
    first = Scored("Canberra is the capital [1]. Sydney is big [2]. It is old.", [], quotes)
    # the one sentence cites both quotes: premise = both texts joined -> entailed
    second = Scored("Sydney is a city, Canberra is the capital [1, 2].", [], quotes)
    assert attribution([first, second], subset_judge) == pytest.approx((1 / 3 + 1) / 2)
    assert attribution([Scored("", [], quotes)], subset_judge) == 0.0


def test_score_answers_adds_nli_only_with_a_judge():
    items = [Scored("Canberra [1].", ["Canberra [1]."], {1: "Canberra"})]
    assert "nli_attribution" not in score_answers(items)
    metrics = score_answers(items, subset_judge)
    assert metrics["nli_attribution"] == 1.0 and metrics["rougeL"] == 1.0 and metrics["citation_f1"] == 1.0


@pytest.mark.parametrize("labels, index", [({0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"}, 0),
                                           ({0: "not_entailment", 1: "entailment"}, 1)])
def test_entailment_label_is_found_by_name(labels, index):
    assert entailment_label(labels, "nli") == index


def test_a_model_without_an_entailment_label_is_refused():
    with pytest.raises(KdxError, match="entailment"):
        entailment_label({0: "LABEL_0", 1: "LABEL_1"}, "some/model")


def test_the_entailment_judge_follows_the_classifiers_argmax(tmp_path):
    """A small random NLI classifier saved as a checkpoint: the judge says "entailed" exactly where
    the model's argmax is its entailment class."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from kdx.tasks.answer_metrics import EntailmentJudge

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "d", "e"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=3, initializer_range=1.0,
                        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
                        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2})
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "nli")
    tokenizer.save_pretrained(tmp_path / "nli")
    pairs = [("a b", "c"), ("d e", "a"), ("a a a", "b e"), ("c", "d d")]
    with torch.no_grad():
        expected = [int(model(**tokenizer(p, h, return_tensors="pt")).logits.argmax()) == 2 for p, h in pairs]
    assert EntailmentJudge(str(tmp_path / "nli"), batch_size=3)(pairs) == expected
