"""What every task provides to a trial: examples per split, label space, metrics, a DataModule.

Splits are named `train` and the evaluation splits (`val`, and e.g. `val_mm` for MNLI
mismatched); metric names are `<split>/<metric>`, the headline one is `val/<main_metric>`.
Every example carries a stable integer `idx` (its position in its split), which the teacher
output cache and auxiliary-sample methods key on.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kdx.errors import KdxError
from kdx.tasks.families import FAMILIES, NOT_MODEL_INPUTS
from kdx.tasks.sampling import EpochShuffle, evaluation_sampler  # resumable order; exact DDP evaluation


@dataclass(frozen=True)
class TextExample:
    idx: int
    text_a: str
    text_b: str | None
    label: float | int


class SplitEvaluator:
    """Metrics a task computes itself over a whole evaluation split, from the model rather than
    from one batch's logits: generated text scored against references (HAGRID), decoded clusters
    scored by the CoNLL scorer (coreference). One instance per split and evaluation pass;
    `compute` returns metric names without the split prefix (`rougeL`, `conll_f1`)."""

    def update(self, model, batch: dict, logits) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def write(self, folder: Path) -> None:
        """Optional: files of the last evaluation (generated answers, predicted clusters), written
        beside results.json after the final evaluation."""


@dataclass
class TaskSpec:
    """The task facts that models, methods and metrics need. `family` names the batch contract
    (kdx/tasks/families.py); left out, it is `regression` for one output and `classification`
    otherwise, which is what every sequence-level task is."""

    name: str
    num_labels: int                      # classes; 1 = regression; token-level: outputs per token
    metrics: list[str]                   # e.g. ["acc", "f1"]; the first eval split gets the headline
    main_metric: str                     # one of metrics
    eval_splits: list[str] = field(default_factory=lambda: ["val"])
    label_names: list[str] | None = None
    family: str | None = None
    # `evaluator(split)`: a fresh SplitEvaluator for the split, for metrics beyond per-batch ones.
    evaluator: Callable[[str], SplitEvaluator] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.family is None:
            self.family = "regression" if self.num_labels == 1 else "classification"
        if self.family not in FAMILIES:
            raise KdxError(f"task {self.name!r} has family {self.family!r}", f"use one of {list(FAMILIES)}")

    @property
    def is_regression(self) -> bool:
        return self.family == "regression"

    @property
    def main_metric_name(self) -> str:
        return f"{self.eval_splits[0]}/{self.main_metric}"


class Task:
    """Base class: a task knows its spec and builds a DataModule (tokenizer may be unused)."""

    spec: TaskSpec

    def datamodule(self, tokenizer, data_cfg) -> L.LightningDataModule:
        raise NotImplementedError

    def training_texts(self) -> Iterable[str]:
        """Text to train a tokenizer on (text tasks only)."""
        raise NotImplementedError(f"task {self.spec.name} has no text to train a tokenizer on")


class TextTask(Task):
    """A text-classification/regression task given as lists of TextExample per split."""

    def splits(self) -> dict[str, list[TextExample]]:
        """`train` plus every name in spec.eval_splits. Loaded once and cached."""
        if not hasattr(self, "_splits"):
            self._splits = self.load_splits()
        return self._splits

    def load_splits(self) -> dict[str, list[TextExample]]:
        raise NotImplementedError

    def training_texts(self) -> Iterable[str]:
        for ex in self.splits()["train"]:
            yield ex.text_a
            if ex.text_b is not None:
                yield ex.text_b

    def datamodule(self, tokenizer, data_cfg) -> "TextDataModule":
        return TextDataModule(self.splits(), self.spec, tokenizer, data_cfg)


class EncodedDataset(Dataset):
    """Tokenized examples; padding happens per batch in the collate function."""

    def __init__(self, examples: list[TextExample], tokenizer, max_length: int):
        self.examples = examples
        firsts = [ex.text_a for ex in examples]
        seconds = [ex.text_b for ex in examples]
        if all(s is None for s in seconds):
            enc = tokenizer(firsts, truncation=True, max_length=max_length)
        else:
            enc = tokenizer(firsts, [s or "" for s in seconds], truncation=True, max_length=max_length)
        # numpy rows: the collator copies each into the padded batch in one step
        self.features = [{k: np.asarray(enc[k][i], dtype=np.int32) for k in enc.keys()} for i in range(len(examples))]

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        ex = self.examples[i]
        return {**self.features[i], "labels": ex.label, "idx": ex.idx}


class PadCollator:
    """Pads token features to the longest sequence in the batch (one numpy copy per row and key:
    no per-token Python work)."""

    def __init__(self, pad_token_id: int, regression: bool):
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key in rows[0]:
            if key in ("labels", "idx"):
                continue
            padded = np.full((len(rows), longest), self.pad_token_id if key == "input_ids" else 0, dtype=np.int64)
            for i, r in enumerate(rows):
                padded[i, :len(r[key])] = r[key]
            batch[key] = torch.from_numpy(padded)
        label_dtype = torch.float32 if self.regression else torch.long
        batch["labels"] = torch.tensor([r["labels"] for r in rows], dtype=label_dtype)
        batch["idx"] = torch.tensor([r["idx"] for r in rows], dtype=torch.long)
        return batch


class TextDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, list[TextExample]], spec: TaskSpec, tokenizer, data_cfg):
        super().__init__()
        self.splits = splits
        self.spec = spec
        self.tokenizer = tokenizer
        self.cfg = data_cfg
        self.datasets: dict[str, EncodedDataset] = {}
        self.collate = PadCollator(tokenizer.pad_token_id or 0, spec.is_regression)

    def setup(self, stage=None):
        if self.datasets:
            return
        for name, examples in self.splits.items():
            self.datasets[name] = EncodedDataset(examples, self.tokenizer, self.cfg.max_length)

    def _loader(self, name: str, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
            sampler=EpochShuffle(len(self.datasets[name])) if train else evaluation_sampler(self.datasets[name]),
            collate_fn=self.collate,
            num_workers=self.cfg.num_workers,
            pin_memory=bool(self.cfg.get("pin_memory", False)),   # hardware=gpu: faster host-to-device copies
        )

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return [self._loader(name, train=False) for name in self.spec.eval_splits]


def model_inputs(batch: dict) -> dict:
    """The part of a batch that a model's forward takes (everything but labels and ids)."""
    return {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}
