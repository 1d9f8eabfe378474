"""A word-substitution attack on a text classifier: greedy substitution with embedding-neighbour
candidates under a query budget (in the style of TextFooler / the attacks the Combined-KD paper
evaluates against).

For one correctly classified example:
1. Words (whitespace-separated) of the attacked text (the second text of a pair, else the first)
   are ranked by importance: the drop in the gold-class probability when the word is deleted.
2. Each word that is a single whole-word token of the vocabulary gets its `candidates` nearest
   whole-word tokens by cosine similarity of the victim's own input-embedding table (at least
   `min_similarity`).
3. In order of importance, the candidate that lowers the gold-class probability most replaces the
   word (kept only if it lowers it); the attack succeeds as soon as the prediction changes.
Every text the model classifies counts as one query; an attack that runs out of `max_queries`
before the prediction changes fails. Metrics: clean accuracy, accuracy under attack, attack
success rate (successful attacks / correctly classified examples) and mean queries per attack.

TextAttack would provide this, but its dependencies (TensorFlow Hub sentence encoders, downloaded
counter-fitted embeddings) do not install or run offline here; this module needs nothing beyond
the victim model and its tokenizer.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdx.models.outputs import logits_of


@dataclass
class AttackConfig:
    candidates: int = 8               # embedding neighbours tried per word
    # TextFooler's word-similarity floor delta = 0.5. Without it (0.0) the neighbours of a sentiment
    # word include its opposites (boring -> exciting at 0.43 on MiniLM) and ~90 % of attacks succeed.
    min_similarity: float = 0.5       # cosine similarity a candidate needs
    max_queries: int = 200            # model calls per example
    max_length: int = 128
    batch_size: int = 32


@dataclass
class AttackOutcome:
    correct: bool                     # the clean prediction was right
    success: bool                     # ... and the attack changed it
    queries: int
    adversarial: str | None = None    # the perturbed text of a successful attack


class Victim:
    """The model under attack with its tokenizer: class probabilities of texts, counting queries."""

    def __init__(self, model, tokenizer, max_length: int = 128, batch_size: int = 32):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.queries = 0

    @torch.no_grad()
    def probabilities(self, firsts: list[str], seconds: list[str | None]) -> torch.Tensor:
        self.queries += len(firsts)
        out = []
        for i in range(0, len(firsts), self.batch_size):
            a, b = firsts[i:i + self.batch_size], seconds[i:i + self.batch_size]
            pair = None if all(s is None for s in b) else [s or "" for s in b]
            encoded = self.tokenizer(a, pair, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")
            device = next(self.model.parameters()).device
            logits = logits_of(self.model, **{k: v.to(device) for k, v in encoded.items()})
            out.append(F.softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)


class Neighbours:
    """Whole-word vocabulary tokens near each other in an input-embedding table (cosine)."""

    def __init__(self, embeddings: torch.Tensor, tokenizer, k: int, min_similarity: float):
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        # whole words only: alphabetic, not a continuation piece (##x) or a special token
        self.words = {w: i for w, i in vocab.items() if w.isalpha() and i not in special}
        self.ids = torch.tensor(sorted(self.words.values()))
        self.id_to_word = {i: w for w, i in self.words.items()}
        self.table = F.normalize(embeddings.detach().float()[self.ids], dim=-1)
        self.k, self.min_similarity = k, min_similarity
        self.lowercase = getattr(tokenizer, "do_lower_case", None) or all(w == w.lower() for w in self.words)

    def __call__(self, word: str) -> list[str]:
        key = word.lower() if self.lowercase else word
        if key not in self.words:
            return []
        row = (self.ids == self.words[key]).nonzero()[0, 0]
        similarity = self.table @ self.table[row]
        similarity[row] = -2.0
        best = similarity.topk(min(self.k, len(self.ids) - 1))
        return [self.id_to_word[int(self.ids[j])] for s, j in zip(best.values.tolist(), best.indices.tolist())
                if s >= self.min_similarity]


def input_embeddings(model) -> torch.Tensor:
    return model.get_input_embeddings().weight


def attack_example(victim: Victim, neighbours: Neighbours, text_a: str, text_b: str | None, label: int,
                   max_queries: int) -> AttackOutcome:
    start = victim.queries
    attack_second = text_b is not None
    words = (text_b if attack_second else text_a).split()

    def texts(candidate_words: list[list[str]]):
        joined = [" ".join(w) for w in candidate_words]
        return ([text_a] * len(joined), joined) if attack_second else (joined, [None] * len(joined))

    def spent() -> int:
        return victim.queries - start

    clean = victim.probabilities(*texts([words]))[0]
    if int(clean.argmax()) != label:
        return AttackOutcome(correct=False, success=False, queries=spent())
    gold_prob = float(clean[label])
    if not words or spent() + len(words) > max_queries:
        return AttackOutcome(correct=True, success=False, queries=spent())
    deleted = victim.probabilities(*texts([words[:i] + words[i + 1:] for i in range(len(words))]))
    order = sorted(range(len(words)), key=lambda i: float(deleted[i, label]))   # biggest drop first
    current = list(words)
    for position in order:
        candidates = neighbours(words[position])
        if not candidates:
            continue
        candidates = candidates[: max(0, max_queries - spent())]
        if not candidates:
            break
        trials = [current[:position] + [c] + current[position + 1:] for c in candidates]
        probs = victim.probabilities(*texts(trials))
        flipped = (probs.argmax(-1) != label).nonzero()
        if len(flipped):
            best = int(flipped[probs[flipped[:, 0], label].argmin()][0])
            return AttackOutcome(True, True, spent(), " ".join(trials[best]))
        best = int(probs[:, label].argmin())
        if float(probs[best, label]) < gold_prob:
            current, gold_prob = trials[best], float(probs[best, label])
        if spent() >= max_queries:
            break
    return AttackOutcome(correct=True, success=False, queries=spent())


def attack_accuracy(model, tokenizer, examples, config: AttackConfig) -> dict[str, float]:
    """Attack every example ((text_a, text_b | None, label) triples); the suite's metrics."""
    victim = Victim(model, tokenizer, config.max_length, config.batch_size)
    neighbours = Neighbours(input_embeddings(model), tokenizer, config.candidates, config.min_similarity)
    outcomes = [attack_example(victim, neighbours, a, b, int(y), config.max_queries) for a, b, y in examples]
    correct = [o for o in outcomes if o.correct]
    succeeded = [o for o in correct if o.success]
    n = max(1, len(outcomes))
    return {"examples": len(outcomes), "clean_acc": len(correct) / n,
            "attacked_acc": (len(correct) - len(succeeded)) / n,
            "success_rate": len(succeeded) / len(correct) if correct else 0.0,
            "mean_queries": sum(o.queries for o in correct) / len(correct) if correct else 0.0}
