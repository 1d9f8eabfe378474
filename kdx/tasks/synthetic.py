"""The embedded default task: procedurally generated text classification, fully offline.

Each sentence is a sequence of made-up words. A subset of words are *cues*, each with a hidden
Gaussian score for every class; the label is the class with the highest total score, then a
fraction of labels is resampled at random (label noise). With many classes and cues, a model
needs width to hold the evidence: the default teacher (hidden 128) learns the rule while the
narrow student (hidden 16) trained on hard labels stays far below it, so the teacher's soft
labels (which also average out the noise) give KD something to transfer.

Optional difficulty knobs add structure that needs attention, not just word counts: modifier
words change the cue that follows them ("not" flips its score, "very" doubles it), and "never"
anywhere inverts the whole sentence.

Everything is a deterministic function of `seed` and the size/difficulty knobs in
conf/task/synthetic.yaml.
"""

import numpy as np

from kdx.errors import KdxError
from kdx.knobs import Count, Fraction, Seed
from kdx.tasks.base import TaskSpec, TextExample, TextTask

MODIFIERS = {"not": -1.0, "very": 2.0}
NEGATION = "never"


class SyntheticTask(TextTask):
    def __init__(self, name: str = "synthetic", seed: Seed = 0, num_labels: Count = 5,
                 vocab_size: Count = 300, num_cues: Count = 100, train_size: Count = 4000,
                 val_size: Count = 1000, min_length: Count = 8, max_length_words: Count = 16,
                 cue_rate: Fraction = 0.5, modifier_rate: Fraction = 0.0, negation_rate: Fraction = 0.0,
                 label_noise: Fraction = 0.1,
                 metrics=("acc",), main_metric: str = "acc", max_length: Count = 64,
                 data_dir: str | None = None):
        """`max_length` is the token budget per example (read by data.max_length)."""
        if data_dir is not None:
            raise KdxError(f"task.data_dir={data_dir!r}: task {name} is generated and reads no files",
                           "drop task.data_dir for this task")
        if num_cues > vocab_size:
            raise KdxError(f"task.num_cues={num_cues} exceeds task.vocab_size={vocab_size}",
                           "choose num_cues <= vocab_size")
        if not 0 <= label_noise < 1:
            raise KdxError(f"task.label_noise={label_noise} must be in [0, 1)")
        self.seed = seed
        self.num_labels = num_labels
        self.vocab_size, self.num_cues = vocab_size, num_cues
        self.sizes = {"train": train_size, "val": val_size}
        self.length_range = (min_length, max_length_words)
        self.cue_rate, self.modifier_rate, self.label_noise = cue_rate, modifier_rate, label_noise
        self.negation_rate = negation_rate
        self.spec = TaskSpec(name=name, num_labels=num_labels, metrics=list(metrics),
                             main_metric=main_metric)

    def load_splits(self) -> dict[str, list[TextExample]]:
        rng = np.random.default_rng(self.seed)
        cue_scores = self._cue_scores(rng)
        splits = {}
        for split, size in self.sizes.items():
            splits[split] = [self._example(rng, cue_scores, i) for i in range(size)]
        return splits

    def _cue_scores(self, rng: np.random.Generator) -> np.ndarray:
        """Each cue carries dense evidence: a Gaussian score for every class."""
        return rng.normal(size=(self.num_cues, self.num_labels))

    def _example(self, rng: np.random.Generator, cue_scores: np.ndarray, idx: int) -> TextExample:
        length = int(rng.integers(self.length_range[0], self.length_range[1] + 1))
        words, score = [], np.zeros(self.num_labels)
        factor = 1.0
        while len(words) < length:
            if rng.random() < self.cue_rate:
                if rng.random() < self.modifier_rate:
                    modifier = str(rng.choice(list(MODIFIERS)))
                    words.append(modifier)
                    factor *= MODIFIERS[modifier]
                cue = int(rng.integers(self.num_cues))
                words.append(f"w{cue}")
                score += factor * cue_scores[cue]
                factor = 1.0
            else:  # filler word: no effect on the label
                words.append(f"w{int(rng.integers(self.num_cues, self.vocab_size))}")
        if rng.random() < self.negation_rate:  # "never" anywhere inverts the whole sentence
            words.insert(int(rng.integers(len(words) + 1)), NEGATION)
            score = -score
        label = int(np.argmax(score))
        if rng.random() < self.label_noise:
            label = int(rng.integers(self.num_labels))
        return TextExample(idx=idx, text_a=" ".join(words), text_b=None, label=label)
