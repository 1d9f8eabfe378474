"""Extractive question answering: SQuAD v1.1 and v2.0 (family `question_answering`).

Data: the hub (`rajpurkar/squad`, `rajpurkar/squad_v2`) or, with `task.data_dir=DIR`, the official
JSON files DIR/train-v1.1.json and DIR/dev-v1.1.json (v2: train-v2.0.json, dev-v2.0.json).

Features: each question is tokenised with its context as a pair (question first, only the context
truncated); a context longer than the token budget is cut into windows that overlap by
`doc_stride` tokens, and every window is one training/evaluation row. A training window's labels
are the answer's first and last token when the answer lies wholly inside it, otherwise (0, 0):
the first token stands for "no answer here" (and for SQuAD 2.0's unanswerable questions).

Evaluation (`SpanEvaluator`, over the whole split): per question, the best span over all its
windows — start and end among each window's `n_best` highest scores, inside the context, end ≥
start, at most `max_answer_tokens` long — scored start + end; for SQuAD 2.0 the no-answer score is
the lowest first-token score over the windows, and "" is predicted when it beats the best span.
Exact match and F1 (percent) with the official normalisation (kdx/tasks/squad_scoring.py).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from kdx.errors import KdxError
from kdx.tasks.base import SplitEvaluator, Task, TaskSpec
from kdx.tasks.sampling import EpochShuffle
from kdx.tasks.squad_scoring import score_split

VERSIONS = {"v1": {"hub_id": "rajpurkar/squad", "train": "train-v1.1.json", "val": "dev-v1.1.json"},
            "v2": {"hub_id": "rajpurkar/squad_v2", "train": "train-v2.0.json", "val": "dev-v2.0.json"}}
VERSION_NAMES = tuple(VERSIONS)
HUB_SPLITS = {"train": "train", "val": "validation"}


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    context: str
    answers: tuple[str, ...]          # gold answer texts (empty: unanswerable)
    starts: tuple[int, ...]           # their character offsets in the context


# ---- loading ------------------------------------------------------------------------------------
def read_squad_json(path: Path) -> list[Question]:
    """The questions of one official SQuAD JSON file ({"data": [{"paragraphs": [{"context", "qas"}]}]})."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KdxError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})",
                       "use the official SQuAD file as downloaded") from None
    questions = []
    for article_no, article in enumerate(document.get("data", [])):
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                for answer in answers:
                    start = answer["answer_start"]
                    if context[start:start + len(answer["text"])] != answer["text"]:
                        raise KdxError(f"{path}: question {qa['id']!r} (article {article_no}): answer "
                                       f"{answer['text']!r} is not at character {start} of its context",
                                       "fix the answer_start of that answer, or use the official file")
                questions.append(Question(qa["id"], qa["question"], context,
                                          tuple(a["text"] for a in answers), tuple(a["answer_start"] for a in answers)))
    if not questions:
        raise KdxError(f"{path} holds no questions", "use an official SQuAD file (data → paragraphs → qas)")
    return questions


def hub_questions(rows) -> list[Question]:
    return [Question(row["id"], row["question"], row["context"], tuple(row["answers"]["text"]),
                     tuple(row["answers"]["answer_start"])) for row in rows]


# ---- features -----------------------------------------------------------------------------------
@dataclass
class Window:
    """One tokenised (question, context window) row."""

    question: int                          # index into the split's questions
    features: dict                         # input_ids, attention_mask[, token_type_ids]
    offsets: list                          # per token: (char start, char end) in the context, or None
    start: int = 0                         # answer tokens (0, 0: no answer in this window)
    end: int = 0


def windows_of(questions: list[Question], tokenizer, max_length: int, doc_stride: int) -> list[Window]:
    if not getattr(tokenizer, "is_fast", False):
        raise KdxError("question answering needs a fast tokenizer (character offsets of every token)",
                       "use a model pair whose tokenizer is a Hugging Face fast tokenizer")
    encoded = tokenizer([q.question for q in questions], [q.context for q in questions], truncation="only_second",
                        max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    windows = []
    for row, question_no in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence_ids = encoded.sequence_ids(row)
        offsets = [tuple(o) if sequence_ids[t] == 1 else None for t, o in enumerate(encoded["offset_mapping"][row])]
        features = {k: encoded[k][row] for k in encoded.keys() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        window = Window(question_no, features, offsets)
        question = questions[question_no]
        if question.answers:   # training targets follow the first answer
            first, last = question.starts[0], question.starts[0] + len(question.answers[0])
            context_tokens = [t for t, o in enumerate(offsets) if o is not None]
            if context_tokens and offsets[context_tokens[0]][0] <= first and offsets[context_tokens[-1]][1] >= last:
                window.start = next(t for t in context_tokens if offsets[t][1] > first)
                window.end = next(t for t in reversed(context_tokens) if offsets[t][0] < last)
        windows.append(window)
    return windows


class WindowCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[tuple[int, Window]]) -> dict[str, torch.Tensor]:
        longest = max(len(w.features["input_ids"]) for _, w in rows)
        batch = {}
        for key in rows[0][1].features:
            pad = self.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([w.features[key] + [pad] * (longest - len(w.features[key])) for _, w in rows])
        batch["labels"] = torch.tensor([[w.start, w.end] for _, w in rows], dtype=torch.long)
        batch["idx"] = torch.tensor([i for i, _ in rows], dtype=torch.long)
        return batch


class WindowDataset(torch.utils.data.Dataset):
    def __init__(self, windows: list[Window]):
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return i, self.windows[i]


class SquadDataModule(L.LightningDataModule):
    def __init__(self, task: "SquadTask", tokenizer, data_cfg):
        super().__init__()
        self.task, self.tokenizer, self.cfg = task, tokenizer, data_cfg
        self.collate = WindowCollator(tokenizer.pad_token_id or 0)

    def setup(self, stage=None):
        self.task.encode(self.tokenizer, self.cfg.max_length)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = WindowDataset(self.task.windows[split])
        return DataLoader(dataset, batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
                          sampler=EpochShuffle(len(dataset)) if train else None, collate_fn=self.collate,
                          num_workers=self.cfg.num_workers)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return [self._loader(split, train=False) for split in self.task.spec.eval_splits]


# ---- decoding and scoring -----------------------------------------------------------------------
def best_span(start_scores: list[float], end_scores: list[float], offsets: list, n_best: int,
              max_answer_tokens: int) -> tuple[float, int, int] | None:
    """(score, start token, end token) of the best valid span of one window, or None."""
    top_starts = sorted(range(len(start_scores)), key=lambda t: -start_scores[t])[:n_best]
    top_ends = sorted(range(len(end_scores)), key=lambda t: -end_scores[t])[:n_best]
    best = None
    for s in top_starts:
        for e in top_ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                continue
            score = start_scores[s] + end_scores[e]
            if best is None or score > best[0]:
                best = (score, s, e)
    return best


class SpanEvaluator(SplitEvaluator):
    """Exact match and F1 of the decoded answers over one split (see the module docstring)."""

    def __init__(self, task: "SquadTask", split: str):
        self.task, self.split = task, split
        self.reset()

    def reset(self) -> None:
        self.best: dict[int, tuple[float, str]] = {}     # question -> (span score, answer text)
        self.null: dict[int, float] = {}                 # question -> lowest no-answer score

    def update(self, model, batch: dict, logits) -> None:
        windows = self.task.windows[self.split]
        scores = logits.detach().float().cpu()
        for row, index in enumerate(batch["idx"].tolist()):
            window = windows[index]
            question = self.task.questions[self.split][window.question]
            length = len(window.offsets)
            start, end = scores[row, 0, :length].tolist(), scores[row, 1, :length].tolist()
            self.null[window.question] = min(self.null.get(window.question, float("inf")), start[0] + end[0])
            span = best_span(start, end, window.offsets, self.task.n_best, self.task.max_answer_tokens)
            if span is not None and (window.question not in self.best or span[0] > self.best[window.question][0]):
                text = question.context[window.offsets[span[1]][0]:window.offsets[span[2]][1]]
                self.best[window.question] = (span[0], text)

    def predictions(self) -> dict[str, str]:
        answers = {}
        for number, question in enumerate(self.task.questions[self.split]):
            score, text = self.best.get(number, (float("-inf"), ""))
            if self.task.version == "v2" and self.null.get(number, float("inf")) > score:
                text = ""
            answers[question.qid] = text
        return answers

    def compute(self) -> dict[str, float]:
        golds = {q.qid: list(q.answers) for q in self.task.questions[self.split]}
        return score_split(self.predictions(), golds)

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "predictions.json").write_text(json.dumps(self.predictions(), indent=1, ensure_ascii=False) + "\n")


# ---- the task -----------------------------------------------------------------------------------
class SquadTask(Task):
    def __init__(self, version: Literal[VERSION_NAMES] = "v1", name: str | None = None, data_dir: str | None = None,
                 hub_id: str | None = None, max_length: int = 384, doc_stride: int = 128,
                 max_answer_tokens: int = 30, n_best: int = 20, max_train_examples: int | None = None,
                 max_eval_examples: int | None = None):
        if version not in VERSIONS:
            raise KdxError(f"task.version={version!r} is not a SQuAD version", f"use one of {sorted(VERSIONS)}")
        if not 0 <= doc_stride < max_length:
            raise KdxError(f"task.doc_stride={doc_stride} must lie in [0, max_length={max_length})",
                           "use e.g. max_length=384 doc_stride=128 (the BERT recipe)")
        self.version, self.data_dir = version, data_dir
        self.hub_id = hub_id or VERSIONS[version]["hub_id"]
        self.doc_stride, self.max_answer_tokens, self.n_best = doc_stride, max_answer_tokens, n_best
        self.limits = {"train": max_train_examples, "val": max_eval_examples}
        self.spec = TaskSpec(name=name or f"qa/squad{'_v2' if version == 'v2' else ''}", num_labels=2, metrics=[],
                             main_metric="f1", family="question_answering",
                             evaluator=lambda split: SpanEvaluator(self, split))
        self._questions: dict[str, list[Question]] | None = None
        self.windows: dict[str, list[Window]] = {}
        self.encoded_with = None

    @property
    def questions(self) -> dict[str, list[Question]]:
        if self._questions is None:
            loaded = self._from_files() if self.data_dir is not None else self._from_hub()
            self._questions = {split: rows[: self.limits[split]] if self.limits[split] else rows
                               for split, rows in loaded.items()}
        return self._questions

    def _from_files(self) -> dict[str, list[Question]]:
        folder = Path(self.data_dir).expanduser()
        files = {split: folder / VERSIONS[self.version][split] for split in ("train", "val")}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise KdxError(f"task.data_dir={folder} lacks {' and '.join(missing)}",
                           f"point task.data_dir at the folder of the official SQuAD {self.version} files "
                           f"({', '.join(p.name for p in files.values())}), or drop it to load {self.hub_id}")
        return {split: read_squad_json(path) for split, path in files.items()}

    def _from_hub(self) -> dict[str, list[Question]]:
        import datasets

        try:
            dataset = datasets.load_dataset(self.hub_id)
        except OSError as err:
            raise KdxError(f"cannot load dataset {self.hub_id!r} ({type(err).__name__}: {str(err)[:200]})",
                           f"pass task.data_dir=<folder with {VERSIONS[self.version]['train']} and "
                           f"{VERSIONS[self.version]['val']}>, or download the dataset once with network access") from None
        return {split: hub_questions(dataset[hub]) for split, hub in HUB_SPLITS.items()}

    def encode(self, tokenizer, max_length: int) -> None:
        """The windows of every split for this tokenizer (once per tokenizer and length)."""
        key = (id(tokenizer), max_length)
        if self.encoded_with != key:
            self.windows = {split: windows_of(rows, tokenizer, max_length, self.doc_stride)
                            for split, rows in self.questions.items()}
            self.encoded_with = key

    def training_texts(self):
        contexts = set()
        for question in self.questions["train"]:
            yield question.question
            if question.context not in contexts:   # many questions share one paragraph
                contexts.add(question.context)
                yield question.context

    def datamodule(self, tokenizer, data_cfg) -> SquadDataModule:
        return SquadDataModule(self, tokenizer, data_cfg)
