"""Scores of generated answers against reference answers, per query and over a split.

- ROUGE-L (`rouge-score`, Porter stemming): the F-measure of the longest common subsequence, per
  query against its best reference, averaged over queries. On a 0–1 scale.
- BLEU (`sacrebleu`): corpus BLEU over the split with every reference of a query; 0–100 scale as
  sacrebleu reports it.
- Citation precision / recall / F1 (kdx/tasks/citations.py): averaged over queries; an answer
  without citations is counted like any other. `uncited` is the share of such answers,
  `invalid_citations` the share of cited ids that name no quote of the query.
- NLI attribution (optional, `nli_attribution`): the share of an answer's sentences whose cited
  quotes entail them, by an entailment classifier; a sentence citing nothing is not attributed.

Text metrics compare answers with citation markers removed.
"""

import logging
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from kdx.errors import KdxError
from kdx.tasks.citations import best_citation_score, cited_ids, invalid_citations, strip_citations

# "It rains. [1]" → "It rains [1]." so that a citation placed after the full stop stays with its sentence.
CITATION_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Scored:
    """One query: the generated answer, its references and the quotes it may cite."""

    answer: str
    references: list[str]
    quotes: dict[int, str] = field(default_factory=dict)


def sentences(text: str) -> list[str]:
    """The answer's sentences, each keeping the citations written at its end."""
    moved = CITATION_AFTER_STOP.sub(lambda m: f"{m.group(2)}{m.group(1)}", text.strip())
    return [s for s in SENTENCE_END.split(moved) if s.strip()]


def rouge_l(items: list[Scored]) -> float:
    from rouge_score.rouge_scorer import RougeScorer

    logging.getLogger("absl").setLevel(logging.WARNING)   # rouge-score announces its tokenizer at INFO
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score_multi([strip_citations(r) for r in item.references],
                                 strip_citations(item.answer))["rougeL"].fmeasure for item in items]
    return sum(scores) / len(scores) if scores else 0.0


def bleu(items: list[Scored]) -> float:
    """Corpus BLEU; queries with fewer references than the most have their streams padded with
    None, which sacrebleu skips."""
    import sacrebleu

    most = max((len(item.references) for item in items), default=0)
    streams = [[strip_citations(item.references[k]) if k < len(item.references) else None for item in items]
               for k in range(most)]
    return float(sacrebleu.corpus_bleu([strip_citations(item.answer) for item in items], streams).score)


def citation_metrics(items: list[Scored]) -> dict[str, float]:
    scores = [best_citation_score(item.answer, item.references) for item in items]
    count = max(1, len(scores))
    cited = sum(len(cited_ids(item.answer)) for item in items)
    invalid = sum(len(invalid_citations(item.answer, set(item.quotes))) for item in items)
    return {"citation_precision": sum(s.precision for s in scores) / count,
            "citation_recall": sum(s.recall for s in scores) / count,
            "citation_f1": sum(s.f1 for s in scores) / count,
            "uncited": sum(not cited_ids(item.answer) for item in items) / count,
            "invalid_citations": invalid / cited if cited else 0.0}


def attribution(items: list[Scored], entails: Callable[[list[tuple[str, str]]], list[bool]]) -> float:
    """Mean over queries of the share of sentences entailed by the quotes they cite.
    `entails(pairs)` judges (premise, hypothesis) pairs in one call."""
    pairs, owners, per_query = [], [], [[] for _ in items]
    for q, item in enumerate(items):
        for sentence in sentences(item.answer):
            quotes = [item.quotes[i] for i in sorted(cited_ids(sentence)) if i in item.quotes]
            if quotes:
                pairs.append((" ".join(quotes), strip_citations(sentence)))
                owners.append(q)
            else:
                per_query[q].append(False)
    for q, verdict in zip(owners, entails(pairs) if pairs else []):
        per_query[q].append(bool(verdict))
    shares = [sum(v) / len(v) if v else 0.0 for v in per_query]
    return sum(shares) / len(shares) if shares else 0.0


def score_answers(items: list[Scored], entails=None) -> dict[str, float]:
    """Every metric of the split (names without the split prefix)."""
    metrics = {"rougeL": rouge_l(items), "bleu": bleu(items), **citation_metrics(items)}
    if entails is not None:
        metrics["nli_attribution"] = attribution(items, entails)
    return metrics


class EntailmentJudge:
    """(premise, hypothesis) → entailed?, by a sequence-classification NLI model (hub id, folder or
    `pkg:`) whose labels name an entailment class; the argmax class decides."""

    def __init__(self, name_or_path: str, batch_size: int = 16, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from kdx.models.location import hub_error, resolve

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path))
            self.model = AutoModelForSequenceClassification.from_pretrained(resolve(name_or_path)).eval()
        except (OSError, ValueError) as err:
            raise hub_error(name_or_path, err) from None
        self.entailment = entailment_label(self.model.config.id2label, name_or_path)
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, pairs: list[tuple[str, str]]) -> list[bool]:
        device = next(self.model.parameters()).device
        verdicts = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            enc = self.tokenizer([p for p, _ in chunk], [h for _, h in chunk], truncation="only_first",
                                 max_length=self.max_length, padding=True, return_tensors="pt").to(device)
            verdicts += (self.model(**enc).logits.argmax(-1) == self.entailment).tolist()
        return verdicts


def entailment_label(id2label: dict, name: str) -> int:
    found = [int(i) for i, label in id2label.items() if "entail" in str(label).lower()
             and "not" not in str(label).lower()]
    if len(found) != 1:
        raise KdxError(f"the NLI model {name!r} has labels {dict(id2label)}, none (or several) of them "
                       "an entailment class", "use an NLI classifier whose config names an `entailment` label")
    return found[0]
