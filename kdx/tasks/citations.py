"""Inline citations in generated answers (`[1]`, `[1, 2]`, `[1][3]`) and their scores.

An answer cites quote ids by bracketed numbers; one group may list several ids separated by
commas. Citation precision / recall compare the set of ids an answer cites with the set a
reference answer cites, per query:

- precision = |cited ∩ gold| / |cited|, recall = |cited ∩ gold| / |gold|, F1 their harmonic mean;
- an answer that cites nothing has precision 0 when the reference cites something (it is counted,
  not skipped), and an empty reference gives recall 1 (nothing to find); both empty is a perfect
  1 / 1 / 1, since the answer correctly cites nothing;
- ids of quotes the query does not have count as cited and wrong (they lower precision).

With several references per query, the reference with the best F1 is the one scored against
(ties: the first), as ROUGE-L takes its best reference.
"""

import re
from dataclasses import dataclass

# One citation group: "[3]" or "[1, 2]" (spaces optional).
CITATION_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# A group with the whitespace before it, for removal.
CITATION_WITH_SPACE = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")


def cited_ids(text: str) -> set[int]:
    """Every quote id `text` cites."""
    ids = set()
    for group in CITATION_GROUP.findall(text):
        ids.update(int(part) for part in group.split(","))
    return ids


def strip_citations(text: str) -> str:
    """`text` without its citation markers and the spaces they leave ("a [1]." → "a.")."""
    without = SPACE_BEFORE_PUNCTUATION.sub(r"\1", CITATION_WITH_SPACE.sub("", text))
    return " ".join(without.split())


@dataclass(frozen=True)
class CitationScore:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 0.0 if total == 0 else 2 * self.precision * self.recall / total


def citation_score(cited: set[int], gold: set[int]) -> CitationScore:
    """Precision and recall of the cited ids against one reference's ids (conventions above)."""
    hits = len(cited & gold)
    precision = hits / len(cited) if cited else (1.0 if not gold else 0.0)
    recall = hits / len(gold) if gold else 1.0
    return CitationScore(precision, recall)


def best_citation_score(answer: str, references: list[str]) -> CitationScore:
    """The answer's citation score against its best-matching reference (highest F1, first on ties)."""
    cited = cited_ids(answer)
    scores = [citation_score(cited, cited_ids(reference)) for reference in references]
    return max(scores, key=lambda s: s.f1)  # max keeps the first of equal scores


def invalid_citations(answer: str, quote_ids: set[int]) -> set[int]:
    """Cited ids that are not among the query's quotes."""
    return cited_ids(answer) - quote_ids
