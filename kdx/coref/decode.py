"""From per-token start/end scores to spans, and from per-query links to clusters.

Spans: a token is a start (an end) when its start (end) logit is above `threshold` (0 = probability
one half). Starts and ends are paired like brackets: scanning left to right, starts are pushed on
a stack and each end closes the most recent open start, so nested members pair inside out and
consecutive members pair in order. A pair wider than `max_width` tokens is dropped, and so are
unpaired starts and ends. Only `allowed_starts` / `allowed_ends` may take part (first and last
subwords of words, so spans map back to whole words).

Clusters: every query mention is linked to each span found for it; union-find merges the links
into clusters (the connected components), so the result does not depend on query order.
"""

from typing import Hashable, Iterable, Sequence


def decode_spans(start_scores: Sequence[float], end_scores: Sequence[float], max_width: int,
                 threshold: float = 0.0, allowed_starts: Sequence[bool] | None = None,
                 allowed_ends: Sequence[bool] | None = None) -> list[tuple[int, int]]:
    """Inclusive (start, end) token spans from start/end scores of one sequence."""
    spans, open_starts = [], []
    for position in range(len(start_scores)):
        if start_scores[position] > threshold and (allowed_starts is None or allowed_starts[position]):
            open_starts.append(position)
        if end_scores[position] > threshold and (allowed_ends is None or allowed_ends[position]) and open_starts:
            start = open_starts.pop()
            if position - start + 1 <= max_width:
                spans.append((start, position))
    return sorted(spans)


class UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def add(self, item: Hashable) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: Hashable) -> Hashable:
        self.add(item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:          # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def groups(self) -> list[list]:
        found: dict = {}
        for item in self.parent:
            found.setdefault(self.find(item), []).append(item)
        return sorted(sorted(members) for members in found.values())


def merge_clusters(mentions: Iterable[Hashable], links: Iterable[tuple[Hashable, Hashable]],
                   keep_singletons: bool = True) -> list[list]:
    """Clusters of `mentions` connected by `links` (query → found span), sorted."""
    sets = UnionFind()
    for mention in mentions:
        sets.add(mention)
    for a, b in links:
        sets.union(a, b)
    return [group for group in sets.groups() if keep_singletons or len(group) > 1]
