"""Coreference metrics with the semantics of the CoNLL reference scorer (v8.01).

Every metric is computed per document (a (document, part) unit) as four counts — recall
numerator and denominator, precision numerator and denominator — which are summed over all
documents before dividing (BLANC: its coreference and non-coreference link counts are summed).
Mentions match exactly (same first and last word). As in the reference scorer:

- a mention repeated in the response keeps its first cluster only, and clusters left empty (or
  given empty) are dropped; a mention repeated in the key keeps its first cluster too;
- singletons count: key and response clusters of one mention take part in B³, CEAF, BLANC and
  LEA as they are (they add no links to MUC);
- response mentions that are not in the key stay in the response: they lower B³, CEAF-m and
  BLANC precision, add links to MUC's precision denominator, and CEAF-e counts their clusters.

MUC (Vilain et al. 1995): R = Σ_k (|k| − |p(k)|) / Σ_k (|k| − 1), p(k) the partition of k by the
response (mentions missing from the response each alone); P symmetric. B³ (Bagga & Baldwin 1998):
R = Σ_k Σ_r |k∩r|² / |k| over Σ_k |k|, P symmetric. CEAF (Luo 2005): the one-to-one key/response
cluster alignment maximising Σ φ (Kuhn–Munkres); CEAF-m φ = |k∩r| over mention counts, CEAF-e
φ = 2|k∩r| / (|k| + |r|) over cluster counts. BLANC (Recasens & Hovy 2011, Luo et al. 2014): the
mean of the F1 of coreference links and of non-coreference links (only one of them when the key
has no links of the other kind). LEA (Moosavi & Strube 2016): R = Σ_k |k| · Σ_r link(k∩r) /
link(k) over Σ_k |k| with link(n) = n(n−1)/2, a singleton k counting one self-link that is
resolved when the response has that mention as a singleton; P symmetric. F1 = 2PR / (P + R)
(0 when both are 0). CoNLL F1 = mean of the MUC, B³ and CEAF-e F1.
"""

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

METRICS = ("muc", "bcub", "ceafm", "ceafe", "blanc", "lea")
CONLL_METRICS = ("muc", "bcub", "ceafe")

Clusters = Sequence[Sequence[Hashable]]


def clean(key: Clusters, response: Clusters) -> tuple[list[list], list[list]]:
    """Both clusterings with repeated mentions (after their first cluster) and empty clusters removed."""
    def dedupe(clusters):
        seen, result = set(), []
        for cluster in clusters:
            kept = []
            for mention in cluster:
                if mention not in seen:
                    seen.add(mention)
                    kept.append(mention)
            if kept:
                result.append(kept)
        return result
    return dedupe(key), dedupe(response)


def membership(clusters: list[list]) -> dict:
    return {mention: index for index, cluster in enumerate(clusters) for mention in cluster}


def overlaps(key: list[list], response: list[list]) -> np.ndarray:
    """|k ∩ r| for every key cluster k (rows) and response cluster r (columns)."""
    counts = np.zeros((len(key), len(response)), dtype=np.int64)
    in_response = membership(response)
    for i, cluster in enumerate(key):
        for mention in cluster:
            if mention in in_response:
                counts[i, in_response[mention]] += 1
    return counts


# ---- per-document counts: (recall num, recall den, precision num, precision den) -----------------
def muc_counts(key, response, common) -> tuple[float, float, float, float]:
    def side(clusters, common_rows):
        numerator = denominator = 0
        for cluster, row in zip(clusters, common_rows):
            covered = int(row.sum())
            parts = int((row > 0).sum()) + (len(cluster) - covered)
            numerator += len(cluster) - parts
            denominator += len(cluster) - 1
        return numerator, denominator
    nr, dr = side(key, common)
    npr, dp = side(response, common.T)
    return nr, dr, npr, dp


def bcub_counts(key, response, common) -> tuple[float, float, float, float]:
    squared = common.astype(np.float64) ** 2
    key_sizes = np.array([len(c) for c in key], dtype=np.float64)
    response_sizes = np.array([len(c) for c in response], dtype=np.float64)
    nr = float((squared / key_sizes[:, None]).sum()) if len(key) and len(response) else 0.0
    npr = float((squared / response_sizes[None, :]).sum()) if len(key) and len(response) else 0.0
    return nr, float(key_sizes.sum()), npr, float(response_sizes.sum())


def ceaf_counts(key, response, common, entity: bool) -> tuple[float, float, float, float]:
    if entity:
        sizes = np.array([len(c) for c in key], dtype=np.float64)[:, None] + \
            np.array([len(c) for c in response], dtype=np.float64)[None, :]
        similarity = 2 * common / np.maximum(sizes, 1)
        dr, dp = len(key), len(response)
    else:
        similarity = common.astype(np.float64)
        dr, dp = sum(len(c) for c in key), sum(len(c) for c in response)
    best = 0.0
    if similarity.size:
        rows, columns = linear_sum_assignment(similarity, maximize=True)
        best = float(similarity[rows, columns].sum())
    return best, dr, best, dp


def lea_counts(key, response, common) -> tuple[float, float, float, float]:
    def side(clusters, others, common_rows):
        numerator = denominator = 0.0
        other_sizes = [len(c) for c in others]
        for cluster, row in zip(clusters, common_rows):
            size = len(cluster)
            if size == 1:
                resolved = sum(1 for j, n in enumerate(row) if n == 1 and other_sizes[j] == 1)
                numerator += size * resolved
            else:
                numerator += size * sum(n * (n - 1) / 2 for n in row) / (size * (size - 1) / 2)
            denominator += size
        return numerator, denominator
    nr, dr = side(key, response, common)
    npr, dp = side(response, key, common.T)
    return nr, dr, npr, dp


def blanc_counts(key, response, common) -> tuple[int, ...]:
    """(correct coref links, key coref links, response coref links,
        correct non-coref links, key non-coref links, response non-coref links)."""
    def links(clusters):
        sizes = [len(c) for c in clusters]
        total = sum(sizes)
        coref = sum(n * (n - 1) // 2 for n in sizes)
        return coref, total * (total - 1) // 2 - coref
    key_coref, key_non = links(key)
    response_coref, response_non = links(response)
    correct_coref = int(sum(int(n) * (int(n) - 1) // 2 for n in common.flat))
    # A non-coreference link is correct when both mentions are in both clusterings and in
    # different clusters in each: pairs of shared mentions, minus those coreferent on either side.
    shared = int(common.sum())
    shared_pairs = shared * (shared - 1) // 2
    key_shared_coref = sum(int(s) * (int(s) - 1) // 2 for s in common.sum(axis=1))
    response_shared_coref = sum(int(s) * (int(s) - 1) // 2 for s in common.sum(axis=0))
    correct_non = shared_pairs - key_shared_coref - response_shared_coref + correct_coref
    return correct_coref, key_coref, response_coref, correct_non, key_non, response_non


@dataclass
class Totals:
    """Counts summed over documents; `scores()` divides them."""

    counts: dict[str, list[float]] = field(default_factory=lambda: {m: [0.0] * 4 for m in METRICS if m != "blanc"})
    blanc: list[int] = field(default_factory=lambda: [0] * 6)
    documents: int = 0

    def add(self, key: Clusters, response: Clusters) -> None:
        key, response = clean(key, response)
        common = overlaps(key, response)
        per_metric = {"muc": muc_counts(key, response, common), "bcub": bcub_counts(key, response, common),
                      "ceafm": ceaf_counts(key, response, common, entity=False),
                      "ceafe": ceaf_counts(key, response, common, entity=True),
                      "lea": lea_counts(key, response, common)}
        for name, values in per_metric.items():
            self.counts[name] = [a + b for a, b in zip(self.counts[name], values)]
        self.blanc = [a + b for a, b in zip(self.blanc, blanc_counts(key, response, common))]
        self.documents += 1

    def scores(self) -> dict:
        """{metric: [recall, precision, f1]} for every metric, and `conll_f1`."""
        result = {}
        for name in METRICS:
            result[name] = list(blanc_score(*self.blanc)) if name == "blanc" else list(rpf(*self.counts[name]))
        result["conll_f1"] = sum(result[m][2] for m in CONLL_METRICS) / len(CONLL_METRICS)
        return result


def f1(recall: float, precision: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def rpf(nr: float, dr: float, npr: float, dp: float) -> tuple[float, float, float]:
    recall = float(nr / dr) if dr else 0.0
    precision = float(npr / dp) if dp else 0.0
    return recall, precision, f1(recall, precision)


def blanc_score(correct_coref, key_coref, response_coref, correct_non, key_non, response_non):
    """BLANC from summed link counts, with the reference scorer's cases: the mean of the
    coreference and non-coreference scores, only one of them when the key has no links of the
    other kind, 0 when the key has no links at all."""
    coref = (correct_coref / key_coref if key_coref else 0.0, correct_coref / response_coref if response_coref else 0.0)
    non = (correct_non / key_non if key_non else 0.0, correct_non / response_non if response_non else 0.0)
    if not key_coref and not key_non:
        return 0.0, 0.0, 0.0
    if not key_coref:
        return non[0], non[1], f1(*non)
    if not key_non:
        return coref[0], coref[1], f1(*coref)
    return (coref[0] + non[0]) / 2, (coref[1] + non[1]) / 2, (f1(*coref) + f1(*non)) / 2


def score_documents(pairs) -> dict:
    """Scores of (key clusters, response clusters) pairs, one per document, summed."""
    totals = Totals()
    for key, response in pairs:
        totals.add(key, response)
    return totals.scores()
