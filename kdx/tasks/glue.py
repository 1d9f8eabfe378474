"""The nine GLUE tasks, from the Hugging Face hub (`nyu-mll/glue`) or from the original GLUE TSVs.

`task.data_dir=DIR` reads DIR/train.tsv and DIR/dev.tsv (MNLI: dev_matched.tsv and
dev_mismatched.tsv) in the layout of the official GLUE download; otherwise the task comes from
the hub. Label ids follow the hub's ClassLabel order in both cases, so hub and TSV runs compare.

The TSVs are read with quoting off: GLUE text holds bare `"` characters that a quoting reader
would take as field delimiters and silently merge rows.
"""

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from kdx.errors import KdxError
from kdx.knobs import Count
from kdx.tasks.base import TaskSpec, TextExample, TextTask

HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueLayout:
    """Where one GLUE task keeps its text and labels, on the hub and in the TSV files."""

    folder: str                          # folder name in the official GLUE download
    label_names: tuple[str, ...] | None  # hub ClassLabel order; None = regression (STS-B)
    hub_columns: tuple[str, str | None]  # text_a, text_b on the hub
    tsv_columns: tuple[str, str | None]  # text_a, text_b header names in the TSV
    tsv_label: str                       # label header name in the TSV
    tsv_labels_are_names: bool = False   # "entailment" rather than 0/1 in the TSV
    eval_files: dict[str, str] = field(default_factory=lambda: {"val": "dev.tsv"})
    hub_eval_splits: dict[str, str] = field(default_factory=lambda: {"val": "validation"})
    # Headerless files (CoLA): column positions instead of header names.
    positions: dict[str, int] | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


ENTAILMENT_3 = ("entailment", "neutral", "contradiction")
ENTAILMENT_2 = ("entailment", "not_entailment")

LAYOUTS: dict[str, GlueLayout] = {
    "cola": GlueLayout("CoLA", ("unacceptable", "acceptable"), ("sentence", None), (None, None), "label",
                       positions={"source": 0, "label": 1, "mark": 2, "text_a": 3}),
    "sst2": GlueLayout("SST-2", ("negative", "positive"), ("sentence", None), ("sentence", None), "label"),
    "mrpc": GlueLayout("MRPC", ("not_equivalent", "equivalent"), ("sentence1", "sentence2"),
                       ("#1 String", "#2 String"), "Quality"),
    "stsb": GlueLayout("STS-B", None, ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score"),
    "qqp": GlueLayout("QQP", ("not_duplicate", "duplicate"), ("question1", "question2"),
                      ("question1", "question2"), "is_duplicate"),
    "mnli": GlueLayout("MNLI", ENTAILMENT_3, ("premise", "hypothesis"), ("sentence1", "sentence2"),
                       "gold_label", tsv_labels_are_names=True,
                       eval_files={"val": "dev_matched.tsv", "val_mm": "dev_mismatched.tsv"},
                       hub_eval_splits={"val": "validation_matched", "val_mm": "validation_mismatched"}),
    "qnli": GlueLayout("QNLI", ENTAILMENT_2, ("question", "sentence"), ("question", "sentence"), "label",
                       tsv_labels_are_names=True),
    "rte": GlueLayout("RTE", ENTAILMENT_2, ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                      tsv_labels_are_names=True),
    "wnli": GlueLayout("WNLI", ("not_entailment", "entailment"), ("sentence1", "sentence2"),
                       ("sentence1", "sentence2"), "label"),
}


class GlueTask(TextTask):
    def __init__(self, config: str, name: str | None = None, data_dir: str | None = None,
                 hub_id: str = HUB_ID, max_train_examples: Count | None = None,
                 max_eval_examples: Count | None = None,
                 metrics=("acc",), main_metric: str = "acc", max_length: Count = 128):
        """`max_length` is the token budget per example (read by data.max_length)."""
        if config not in LAYOUTS:
            raise KdxError(f"task.config={config!r} is not a GLUE task", f"use one of {sorted(LAYOUTS)}")
        for key, value in (("max_train_examples", max_train_examples), ("max_eval_examples", max_eval_examples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise KdxError(f"task.{key}={value!r} must be a positive integer",
                               "set a number of rows, or null for all of them")
        if main_metric not in metrics:
            raise KdxError(f"task.main_metric={main_metric!r} is not in task.metrics={list(metrics)}",
                           "add it to task.metrics or pick one of them")
        self.config = config
        self.layout = LAYOUTS[config]
        self.data_dir = data_dir
        self.hub_id = hub_id
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self.spec = TaskSpec(name=name or f"glue/{config}", num_labels=self.layout.num_labels,
                             metrics=list(metrics), main_metric=main_metric,
                             eval_splits=list(self.layout.eval_files),
                             label_names=list(self.layout.label_names) if self.layout.label_names else None)

    def load_splits(self) -> dict[str, list[TextExample]]:
        splits = self._from_tsv() if self.data_dir is not None else self._from_hub()
        if self.max_train_examples is not None:
            splits["train"] = splits["train"][: self.max_train_examples]
        if self.max_eval_examples is not None:
            for name in self.spec.eval_splits:
                splits[name] = splits[name][: self.max_eval_examples]
        return splits

    # --- original GLUE TSV files -------------------------------------------------------------

    def _from_tsv(self) -> dict[str, list[TextExample]]:
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise KdxError(f"task.data_dir={self.data_dir} does not exist (or is not a folder)",
                           f"point task.data_dir at the folder holding the GLUE {self.layout.folder} TSVs "
                           f"({', '.join(self.file_names())}), or drop it to load {HUB_ID} from the hub")
        files = {"train": "train.tsv", **self.layout.eval_files}
        missing = [name for name in files.values() if not (folder / name).is_file()]
        if missing:
            nested = folder / self.layout.folder
            hint = (f"; {nested} looks like the right folder: task.data_dir={nested}"
                    if (nested / "train.tsv").is_file() else "")
            raise KdxError(f"task.data_dir={folder} lacks {' and '.join(missing)} "
                           f"(GLUE {self.layout.folder} needs {', '.join(self.file_names())})",
                           f"point task.data_dir at the folder of the official GLUE {self.layout.folder} "
                           f"files{hint}")
        return {split: read_glue_tsv(folder / name, self.layout) for split, name in files.items()}

    def file_names(self) -> list[str]:
        return ["train.tsv", *self.layout.eval_files.values()]

    # --- Hugging Face hub --------------------------------------------------------------------

    def _from_hub(self) -> dict[str, list[TextExample]]:
        import datasets  # here, not at the top: 2.7 s to import, and only hub loading needs it

        try:
            dataset = datasets.load_dataset(self.hub_id, self.config)
        except OSError as err:  # ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, HTTP errors
            raise hub_unreachable(self.hub_id, self.config, self.file_names(), err) from None
        splits = {"train": "train", **self.layout.hub_eval_splits}
        return {split: hub_examples(dataset[hub_split], self.layout) for split, hub_split in splits.items()}


def hub_unreachable(hub_id: str, config: str, file_names: list[str], err: Exception) -> KdxError:
    first_line = (str(err).splitlines() or [""])[0][:200]
    offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
    return KdxError(
        f"cannot load dataset {hub_id!r}, config {config!r}: the Hugging Face hub is unreachable or "
        f"has no such dataset ({type(err).__name__}: {first_line})",
        f"pass task.data_dir=<folder with the GLUE TSVs> ({', '.join(file_names)}), or download the "
        f"dataset once with network access into the HF cache"
        + ("" if offline else " (HF_DATASETS_OFFLINE=1 makes this check fail fast instead of retrying)"),
    )


def hub_examples(rows, layout: GlueLayout) -> list[TextExample]:
    column_a, column_b = layout.hub_columns
    texts_a = rows[column_a]
    texts_b = rows[column_b] if column_b is not None else [None] * len(texts_a)
    labels = rows["label"]
    cast = float if layout.label_names is None else int
    return [TextExample(idx=i, text_a=a, text_b=b, label=cast(y))
            for i, (a, b, y) in enumerate(zip(texts_a, texts_b, labels))]


def read_glue_tsv(path: str | Path, layout: GlueLayout) -> list[TextExample]:
    """One split from an official GLUE TSV file; a malformed row is a KdxError naming its line."""
    path = Path(path)
    examples: list[TextExample] = []
    # utf-8-sig: MRPC's files start with a byte-order mark that would otherwise glue onto "Quality".
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.positions is not None:
            positions, width = layout.positions, len(layout.positions)
        else:
            header = next(reader, None)
            if header is None:
                raise KdxError(f"{path} is empty", "use the official GLUE file (it starts with a header row)")
            positions, width = header_positions(path, header, layout), len(header)
        for row in reader:
            line = reader.line_num  # one physical line per row, as quoting is off
            if not row:
                continue  # a blank line carries no example
            if len(row) != width:
                raise malformed(path, line, f"it has {len(row)} tab-separated columns, expected {width}")
            label = parse_label(row[positions["label"]], layout, path, line)
            text_b = row[positions["text_b"]] if "text_b" in positions else None
            examples.append(TextExample(idx=len(examples), text_a=row[positions["text_a"]], text_b=text_b,
                                        label=label))
    return examples


def header_positions(path: Path, header: list[str], layout: GlueLayout) -> dict[str, int]:
    """Column positions by header name, so reduced files (MNLI with 4 of its 12+ columns) work too."""
    wanted = {"text_a": layout.tsv_columns[0], "label": layout.tsv_label}
    if layout.tsv_columns[1] is not None:
        wanted["text_b"] = layout.tsv_columns[1]
    names = [name.strip() for name in header]
    absent = [column for column in wanted.values() if column not in names]
    if absent:
        raise KdxError(f"{path}, line 1: the header lacks column(s) {absent} (found {names})",
                       f"use the official GLUE {layout.folder} file, whose header names "
                       f"{list(wanted.values())}")
    return {role: names.index(column) for role, column in wanted.items()}


def parse_label(value: str, layout: GlueLayout, path: Path, line: int) -> int | float:
    value = value.strip()
    if layout.label_names is None:
        try:
            score = float(value)
        except ValueError:
            raise malformed(path, line, f"its score {value!r} is not a number") from None
        if not math.isfinite(score):
            raise malformed(path, line, f"its score {value!r} is not a finite number")
        return score
    if layout.tsv_labels_are_names:
        if value not in layout.label_names:
            raise malformed(path, line, f"its label {value!r} is not one of {list(layout.label_names)}")
        return layout.label_names.index(value)
    try:
        label = int(value)
    except ValueError:
        raise malformed(path, line, f"its label {value!r} is not an integer") from None
    if not 0 <= label < len(layout.label_names):
        raise malformed(path, line, f"its label {label} is outside 0..{len(layout.label_names) - 1}")
    return label


def malformed(path: Path, line: int, what: str) -> KdxError:
    return KdxError(f"{path}, line {line}: malformed row: {what}",
                    "fix or remove that row, or use the official GLUE file (tab-separated, no quoting)")
