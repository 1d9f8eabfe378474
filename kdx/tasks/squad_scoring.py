"""SQuAD scoring as the official evaluation scripts (v1.1 and v2.0) define it.

An answer is normalised before comparison: lower-cased, punctuation removed, the articles
"a", "an", "the" removed as whole words, whitespace collapsed. Exact match is 1 when the
normalised prediction equals a normalised gold answer; F1 is the bag-of-tokens F1 between them.
Each question takes its best score over its gold answers; an unanswerable SQuAD 2.0 question
has the single gold answer "" (so only an empty prediction scores on it, and an empty
prediction scores 0 on an answerable one). Split scores are means over questions, in percent.
"""

import collections
import re
import string

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:           # no-answer: right only when both are empty
        return float(predicted == expected)
    common = collections.Counter(predicted) & collections.Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def score_question(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction: the best over the gold answers ([""] when none)."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(exact_match(prediction, g) for g in golds), max(f1(prediction, g) for g in golds)


def score_split(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """{exact_match, f1} in percent over every question of `golds` (a missing prediction is "")."""
    if not golds:
        return {"exact_match": 0.0, "f1": 0.0}
    scores = [score_question(predictions.get(qid, ""), answers) for qid, answers in golds.items()]
    return {"exact_match": 100 * sum(s[0] for s in scores) / len(scores),
            "f1": 100 * sum(s[1] for s in scores) / len(scores)}
