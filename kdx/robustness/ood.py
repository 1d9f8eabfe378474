"""Out-of-domain evaluation sets for GLUE-trained classifiers, by hub id with local-file fallbacks.

| task       | set         | hub id (config, split)                | the set's labels          | from the model's classes          |
|------------|-------------|---------------------------------------|---------------------------|-----------------------------------|
| glue/mnli  | hans        | hans (—, validation)                  | entailment, non-entailment| entailment → entailment, else non |
| glue/qqp   | paws        | paws (labeled_final, test)            | 0 different, 1 paraphrase | duplicate → 1, not_duplicate → 0  |
| glue/sst2  | imdb        | stanfordnlp/imdb (—, test)            | 0 negative, 1 positive    | the same classes                  |
| glue/sst2  | yelp        | fancyzhx/yelp_polarity (—, test)      | 0 negative, 1 positive    | the same classes                  |

A local file replaces the hub (`file=`): TSV with a header or JSON lines, with columns `text_a`,
optional `text_b`, and `label` (an integer id or a label name of the set). Accuracy is the share of
examples whose mapped prediction equals the set's label.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from kdx.errors import KdxError


@dataclass(frozen=True)
class OodSet:
    name: str
    hub_id: str
    hub_config: str | None
    hub_split: str
    columns: tuple[str, str | None]          # text_a, text_b on the hub
    label_names: tuple[str, ...]              # the set's label ids, in order
    # model class id -> the set's label id
    from_model: dict[int, int] = field(default_factory=dict)


SETS: dict[str, list[OodSet]] = {
    "glue/mnli": [OodSet("hans", "hans", None, "validation", ("premise", "hypothesis"),
                         ("entailment", "non-entailment"), {0: 0, 1: 1, 2: 1})],
    "glue/qqp": [OodSet("paws", "paws", "labeled_final", "test", ("sentence1", "sentence2"),
                        ("different", "paraphrase"), {0: 0, 1: 1})],
    "glue/sst2": [OodSet("imdb", "stanfordnlp/imdb", None, "test", ("text", None), ("negative", "positive"),
                         {0: 0, 1: 1}),
                  OodSet("yelp", "fancyzhx/yelp_polarity", None, "test", ("text", None), ("negative", "positive"),
                         {0: 0, 1: 1})],
}


def sets_for(task: str) -> list[OodSet]:
    return SETS.get(task, [])


def parse_label(value, ood: OodSet, where: str) -> int:
    text = str(value).strip()
    if text in ood.label_names:
        return ood.label_names.index(text)
    try:
        label = int(text)
    except ValueError:
        raise KdxError(f"{where}: label {text!r} is neither an id nor one of {list(ood.label_names)}",
                       f"write the {ood.name} labels as 0..{len(ood.label_names) - 1} or by name") from None
    if not 0 <= label < len(ood.label_names):
        raise KdxError(f"{where}: label {label} is outside 0..{len(ood.label_names) - 1}", f"use {ood.name}'s label ids")
    return label


def read_local(path: Path, ood: OodSet) -> list[tuple[str, str | None, int]]:
    """(text_a, text_b, label) rows of a local TSV (header row) or JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise KdxError(f"out-of-domain file {path} does not exist", f"point robustness.ood.files.{ood.name} at a "
                       "TSV (header text_a[, text_b], label) or JSON-lines file")
    if path.suffix in (".jsonl", ".json"):
        rows = [(n, json.loads(line)) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(enumerate(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 2))
    examples = []
    for line, row in rows:
        if "text_a" not in row or "label" not in row:
            raise KdxError(f"{path}, line {line}: needs the fields text_a and label (found {sorted(row)})",
                           "write columns text_a, optional text_b, and label")
        examples.append((row["text_a"], row.get("text_b") or None, parse_label(row["label"], ood, f"{path}, line {line}")))
    return examples


def load_hub(ood: OodSet) -> list[tuple[str, str | None, int]]:
    import datasets

    try:
        rows = datasets.load_dataset(ood.hub_id, ood.hub_config, split=ood.hub_split)
    except OSError as err:   # offline, unknown dataset, network
        raise KdxError(f"cannot load out-of-domain set {ood.name} ({ood.hub_id}): {type(err).__name__}",
                       f"give a local copy: robustness.ood.files.{ood.name}=PATH (TSV/JSONL with text_a, "
                       "text_b, label), or download it once with network access") from None
    a, b = ood.columns
    return [(row[a], row[b] if b else None, int(row["label"])) for row in rows]
