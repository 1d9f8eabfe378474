"""Language modelling on a text corpus (`task=lm/<name>`): documents from local text or JSONL
files, the sentences of a GLUE TSV, or a hub dataset; tokenized, joined with the tokenizer's
end-of-text token, and packed into blocks of `max_length` tokens.

Each block holds max_length + 1 consecutive tokens of the stream: the model reads the first
max_length and position t is labelled with token t + 1 (the family contract of
kdx/tasks/families.py: labels already shifted). Blocks overlap by that one token, so every token
of the stream after the first is predicted exactly once. The last, shorter block is padded and
its padding labelled −100.

Splits: `train/` and `dev/` (or `validation/`) subfolders of `data_dir` when they exist; otherwise
every k-th document (k = round(1 / val_fraction)) is held out for evaluation, so the split does
not depend on file order within a document.
"""

import csv
import json
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from kdx.errors import KdxError
from kdx.knobs import Count, OpenFraction
from kdx.losses import IGNORE_INDEX
from kdx.tasks.base import Task, TaskSpec
from kdx.tasks.sampling import EpochShuffle

SOURCES = ("text", "glue", "hub")
TRAIN_FOLDERS = ("train",)
EVAL_FOLDERS = ("dev", "validation", "val")
# GLUE files whose sentences make a small corpus: file name → column (header name or position).
GLUE_SENTENCE_COLUMNS = {"SST-2": "sentence", "CoLA": 3}


def text_documents(folder: Path) -> list[str]:
    """Every non-empty line of every *.txt file, and the `text` field of every *.jsonl row, under
    `folder` (recursively, in sorted path order)."""
    documents = []
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".txt":
            documents += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            documents += jsonl_documents(path)
    return documents


def jsonl_documents(path: Path, field: str = "text") -> list[str]:
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise KdxError(f"{path}:{number}: not valid JSON ({err.msg})",
                           "write one JSON object per line, e.g. {\"text\": \"...\"}") from None
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise KdxError(f"{path}:{number}: no string field {field!r}",
                           f"give every row a {field!r} field holding the document's text")
        if row[field].strip():
            documents.append(row[field].strip())
    return documents


def glue_sentences(path: Path) -> list[str]:
    """The sentences of a GLUE SST-2 or CoLA TSV (quoting off: the text holds bare quotes)."""
    column = GLUE_SENTENCE_COLUMNS.get(path.parent.name)
    if column is None:
        raise KdxError(f"{path.parent} is not a GLUE folder kdx reads sentences from",
                       f"point task.data_dir at one of {sorted(GLUE_SENTENCE_COLUMNS)}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if isinstance(column, str):
        header, rows = rows[0], rows[1:]
        column = header.index(column)
    return [row[column].strip() for row in rows if len(row) > column and row[column].strip()]


def hold_out(documents: list[str], val_fraction: float) -> dict[str, list[str]]:
    if not 0 < val_fraction < 1:
        raise KdxError(f"task.val_fraction={val_fraction} must be between 0 and 1",
                       "hold out e.g. 0.1 of the documents, or give train/ and dev/ subfolders")
    every = max(2, round(1 / val_fraction))
    return {"train": [d for i, d in enumerate(documents) if i % every != every - 1],
            "val": [d for i, d in enumerate(documents) if i % every == every - 1]}


def pack(documents: list[str], tokenizer, length: int, max_blocks: int | None = None) -> torch.Tensor:
    """(N, length + 1) token blocks of the documents joined by the end-of-text token; the last
    block is right-padded with −1 (turned into padding and −100 labels by the dataset)."""
    separator = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream += ids + ([separator] if separator is not None else [])
        if max_blocks is not None and len(stream) > max_blocks * length + 1:
            break
    if len(stream) < 2:
        raise KdxError("the corpus has fewer than two tokens", "check task.data_dir: it holds no text")
    blocks = []
    for start in range(0, len(stream) - 1, length):
        chunk = stream[start:start + length + 1]
        blocks.append(chunk + [-1] * (length + 1 - len(chunk)))
        if max_blocks is not None and len(blocks) == max_blocks:
            break
    return torch.tensor(blocks, dtype=torch.long)


class PackedBlocks(Dataset):
    def __init__(self, blocks: torch.Tensor, pad_token_id: int):
        real = blocks >= 0
        self.input_ids = torch.where(real, blocks, pad_token_id)[:, :-1]
        self.attention_mask = real[:, :-1].long()
        self.labels = torch.where(real[:, 1:], blocks[:, 1:], IGNORE_INDEX)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i],
                "labels": self.labels[i], "idx": torch.tensor(i)}


def stack(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


class LMTask(Task):
    def __init__(self, name: str, source: Literal[SOURCES] = "text", data_dir: str | None = None,
                 hub_id: str | None = None, hub_config: str | None = None, text_field: str = "text",
                 val_fraction: OpenFraction = 0.1, max_length: Count = 256, max_train_blocks: Count | None = None,
                 max_eval_blocks: Count | None = None, max_documents: Count | None = 20000,
                 eval_batch_size: Count = 8, metrics: list[str] | None = None, main_metric: str = "perplexity"):
        if source not in SOURCES:
            raise KdxError(f"task.source={source!r} is unknown", f"use one of {list(SOURCES)}")
        if source in ("text", "glue") and not data_dir:
            raise KdxError(f"task {name} reads local files but task.data_dir is not set",
                           "set task.data_dir=DIR (a folder of *.txt / *.jsonl files, or a GLUE task folder)")
        if source == "hub" and not hub_id:
            raise KdxError(f"task {name} loads from the hub but task.hub_id is not set",
                           "set task.hub_id (e.g. stanfordnlp/imdb), or use task=lm/text task.data_dir=DIR")
        if max_length < 2:
            raise KdxError(f"task.max_length={max_length} is too short to pack", "use at least 2 tokens per block")
        self.source, self.data_dir, self.hub_id, self.hub_config = source, data_dir, hub_id, hub_config
        self.text_field, self.val_fraction, self.max_length = text_field, val_fraction, max_length
        self.max_blocks = {"train": max_train_blocks, "val": max_eval_blocks}
        self.max_documents, self.eval_batch_size = max_documents, eval_batch_size
        self.spec = TaskSpec(name=name, num_labels=0, metrics=list(metrics or ["perplexity", "token_acc"]),
                             main_metric=main_metric, family="language_modeling")

    def documents(self) -> dict[str, list[str]]:
        """Documents per split (train, val), loaded once."""
        if not hasattr(self, "_documents"):
            self._documents = self.load_documents()
        return self._documents

    def load_documents(self) -> dict[str, list[str]]:
        if self.source == "hub":
            return hold_out(self.hub_documents(), self.val_fraction)
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise KdxError(f"task.data_dir={self.data_dir!r} is not a folder", "point it at the corpus folder")
        if self.source == "glue":
            return {"train": glue_sentences(folder / "train.tsv"), "val": glue_sentences(folder / "dev.tsv")}
        train = [folder / n for n in TRAIN_FOLDERS if (folder / n).is_dir()]
        evals = [folder / n for n in EVAL_FOLDERS if (folder / n).is_dir()]
        if train and evals:
            splits = {"train": text_documents(train[0]), "val": text_documents(evals[0])}
        else:
            splits = hold_out(text_documents(folder), self.val_fraction)
        for split, docs in splits.items():
            if not docs:
                raise KdxError(f"task {self.spec.name}: no {split} documents under {folder}",
                               "add *.txt files (one document per line) or *.jsonl files with a `text` field")
        return splits

    def hub_documents(self) -> list[str]:
        """The first `max_documents` rows of the hub dataset's train split (streamed: a corpus
        like SlimPajama is never downloaded whole)."""
        from datasets import load_dataset

        try:
            rows = load_dataset(self.hub_id, self.hub_config, split="train", streaming=True)
            documents = []
            for row in rows:
                documents.append(row[self.text_field])
                if len(documents) == self.max_documents:
                    break
        except (OSError, ValueError) as err:  # offline, unknown repository, HTTP errors
            raise KdxError(f"cannot stream {self.hub_id!r} from the hub ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200]})",
                           "use task=lm/text task.data_dir=DIR with local text files instead") from None
        except KeyError:
            raise KdxError(f"{self.hub_id!r} rows have no field {self.text_field!r}",
                           "set task.text_field to the column holding the text") from None
        return documents

    def training_texts(self):
        yield from self.documents()["train"]

    def datamodule(self, tokenizer, data_cfg) -> "LMDataModule":
        if tokenizer is None:
            raise KdxError(f"task {self.spec.name} needs a tokenizer", "use a model pair with a tokenizer")
        self.spec.num_labels = len(tokenizer)   # outputs per token: the vocabulary
        return LMDataModule(self, tokenizer, data_cfg)


class LMDataModule(L.LightningDataModule):
    def __init__(self, task: LMTask, tokenizer, data_cfg):
        super().__init__()
        self.task, self.tokenizer, self.cfg = task, tokenizer, data_cfg
        self.datasets: dict[str, PackedBlocks] = {}

    def setup(self, stage=None):
        if self.datasets:
            return
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for split, documents in self.task.documents().items():
            blocks = pack(documents, self.tokenizer, self.cfg.max_length, self.task.max_blocks[split])
            self.datasets[split] = PackedBlocks(blocks, pad)

    def train_dataloader(self):
        train = self.datasets["train"]
        return DataLoader(train, batch_size=self.cfg.batch_size, sampler=EpochShuffle(len(train)),
                          collate_fn=stack, num_workers=self.cfg.num_workers)

    def val_dataloader(self):
        # Token-level logits over a vocabulary are large: evaluation batches are the task's own size.
        return [DataLoader(self.datasets["val"], batch_size=self.task.eval_batch_size, collate_fn=stack,
                           num_workers=self.cfg.num_workers)]
