"""Zero-shot multiple choice by log-likelihood, the way lm-evaluation-harness scores its
multiple-choice tasks: for each item, every choice is appended to the context and scored by the
sum of the log-probabilities of its tokens; `acc` picks the highest sum, `acc_norm` the highest
sum per character of the choice.

Items come from a JSONL file (`{"context": ..., "choices": [...], "label": i}` per line) or are
made from local GLUE dev sets (SST-2 sentiment, CoLA acceptability) as small offline suites, so
a before/after comparison runs without the hub.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdx.errors import KdxError


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    label: int


def jsonl_items(path: Path) -> list[Item]:
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = Item(str(row["context"]), tuple(str(c) for c in row["choices"]), int(row["label"]))
        except (ValueError, KeyError, TypeError) as err:
            raise KdxError(f"{path}:{number}: not a multiple-choice item ({type(err).__name__}: {err})",
                           'write one object per line: {"context": "...", "choices": ["a", "b"], "label": 0}') from None
        if not 0 <= item.label < len(item.choices):
            raise KdxError(f"{path}:{number}: label {item.label} is not the index of one of {len(item.choices)} choices",
                           "labels count choices from 0")
        items.append(item)
    return items


def glue_dev_rows(folder: Path) -> list[list[str]]:
    path = Path(folder) / "dev.tsv"
    if not path.is_file():
        raise KdxError(f"{path} does not exist", "point zeroshot.data_dir at the folder holding SST-2/ and CoLA/")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def sst2_items(folder: Path) -> list[Item]:
    """SST-2 dev: the review's sentiment, ' negative' or ' positive'."""
    rows = glue_dev_rows(folder)[1:]
    return [Item(f"Review: {sentence.strip()}\nSentiment:", (" negative", " positive"), int(label))
            for sentence, label in rows]


def cola_items(folder: Path) -> list[Item]:
    """CoLA dev (no header; columns source, label, original mark, sentence): is it grammatical?"""
    return [Item(f"Sentence: {row[3].strip()}\nQuestion: Is this sentence grammatical?\nAnswer:", (" no", " yes"),
                 int(row[1])) for row in glue_dev_rows(folder)]


SUITES = {"sst2": ("SST-2", sst2_items), "cola": ("CoLA", cola_items)}


def suite_items(name: str, glue_dir: str | None, limit: int | None) -> list[Item]:
    """A built-in suite from `glue_dir`, or the items of a JSONL file named `name`."""
    if name.endswith(".jsonl"):
        items = jsonl_items(Path(name))
    elif name in SUITES:
        if not glue_dir:
            raise KdxError(f"zero-shot suite {name!r} reads the GLUE dev set, but zeroshot.data_dir is not set",
                           "set zeroshot.data_dir to the folder holding SST-2/ and CoLA/")
        folder, make = SUITES[name]
        items = make(Path(glue_dir) / folder)
    else:
        raise KdxError(f"zero-shot suite {name!r} is unknown", f"use one of {sorted(SUITES)} or a .jsonl file of items")
    return items[:limit] if limit else items


@torch.no_grad()
def choice_log_likelihoods(model: nn.Module, tokenizer, item: Item) -> list[float]:
    """Σ log p(choice tokens | context) for every choice, in one batch (right-padded)."""
    context = tokenizer(item.context, add_special_tokens=False)["input_ids"]
    sequences, spans = [], []
    for choice in item.choices:
        continuation = tokenizer(choice, add_special_tokens=False)["input_ids"]
        sequences.append(context + continuation)
        spans.append((len(context), len(context) + len(continuation)))
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    device = next(model.parameters()).device
    log_probs = F.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    scores = []
    for row, (start, end) in enumerate(spans):
        positions = torch.arange(start, end)
        scores.append(float(log_probs[row, positions - 1, ids[row, positions]].sum()))
    return scores


def evaluate_items(model: nn.Module, tokenizer, items: list[Item]) -> dict[str, float]:
    """acc and acc_norm (by choice length in characters) over the items."""
    model.eval()
    correct = correct_norm = 0
    for item in items:
        scores = choice_log_likelihoods(model, tokenizer, item)
        normalised = [s / max(1, len(c)) for s, c in zip(scores, item.choices)]
        correct += max(range(len(scores)), key=scores.__getitem__) == item.label
        correct_norm += max(range(len(normalised)), key=normalised.__getitem__) == item.label
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "items": len(items)}
