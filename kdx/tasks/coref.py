"""Coreference in one pass per query mention (`task=coref/conll2012`), a span_prediction task.

Data: `*_gold_conll` files under `data_dir` (train/ and dev/ subfolders, or one folder split by
(document, part) unit: every k-th unit in sorted order, k = round(1 / val_fraction), is held out
for dev), or the hub dataset `ontonotes/conll2012_ontonotesv5` (`source: hub`).

Examples: a part's words are tokenized once (kdx/coref/align.py) and cut into segments of
`max_length − 2` subwords ([CLS] segment [SEP]) that overlap by `segment_overlap` subwords, so a
long document is read in windows. One example is a segment and a query mention inside it: the
query is marked by token type 1 on its subwords (BERT's segment embedding; the vocabulary is
untouched), and the labels (T, 2) are 1 at the first / last subword of every *other* member of
the query's cluster lying wholly in the segment, 0 elsewhere, −100 on [CLS], [SEP] and padding.
The head is the encoder's per-token classifier with two outputs (start, end), trained with BCE
(kdx.losses.span_loss).

Mention modes: `gold` — queries are the key mentions and decoded spans are kept when they are key
mentions; `predicted` — each segment also has a query-less example (all token types 0) whose
targets are the starts/ends of every key mention (mention detection); at evaluation its decoded
spans become the queries, run through the model by the evaluator.

Decoding (kdx/coref/decode.py): per example, word-level start/end scores (a word's first subword
for starts, last for ends), bracket pairing within `max_span_width` words; every (query, span)
link of a part, from every segment, goes into one union-find, whose components are the
predicted clusters. Scores: kdx/coref/scorer.py over the split's parts.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from kdx.coref.align import Alignment, align
from kdx.coref.conll import Mention, Part, read_parts, render_part
from kdx.coref.decode import decode_spans, merge_clusters
from kdx.coref.hub import load_hub_parts
from kdx.coref.scorer import METRICS, Totals
from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.tasks.base import SplitEvaluator, Task, TaskSpec
from kdx.tasks.sampling import EpochShuffle

SOURCES = ("files", "hub")
MODES = ("gold", "predicted")
TRAIN_FOLDERS = ("train",)
EVAL_FOLDERS = ("dev", "development", "validation", "val")
CONLL_SUFFIXES = ("_conll",)         # *_gold_conll, *_auto_conll, *.v4_gold_conll
HUB_SPLITS = {"train": "train", "val": "validation"}


@dataclass
class Segment:
    part: int                  # index into the split's parts
    start: int                 # first subword of the window (inclusive)
    end: int                   # last subword + 1


@dataclass
class CorefExample:
    idx: int
    segment: Segment
    query: Mention | None      # word span; None = the mention-detection example
    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[list[float]]


def conll_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(CONLL_SUFFIXES))


def hold_out_parts(parts: list[Part], val_fraction: float) -> dict[str, list[Part]]:
    """Every k-th (document, part) unit in sorted order goes to dev (k = round(1 / val_fraction))."""
    if not 0 < val_fraction < 1:
        raise KdxError(f"task.val_fraction={val_fraction} must be between 0 and 1",
                       "hold out e.g. 0.25 of the parts, or give train/ and dev/ subfolders")
    every = max(2, round(1 / val_fraction))
    ordered = sorted(parts, key=lambda p: (p.document, p.part))
    return {"train": [p for i, p in enumerate(ordered) if i % every != every - 1],
            "val": [p for i, p in enumerate(ordered) if i % every == every - 1]}


def segments_of(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Windows [start, end) of at most `window` subwords covering 0..length, overlapping by `overlap`."""
    if length <= window:
        return [(0, length)]
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    return [(s, s + window) for s in starts]


def inside(alignment: Alignment, mention: Mention, segment: Segment) -> bool:
    first, last = alignment.subword_span(*mention)
    return segment.start <= first and last < segment.end


class CorefTask(Task):
    def __init__(self, name: str = "coref/conll2012", source: str = "files", data_dir: str | None = None,
                 hub_id: str = "ontonotes/conll2012_ontonotesv5", hub_config: str = "english_v4",
                 val_fraction: float = 0.25, mentions: str = "gold", max_length: int = 384,
                 segment_overlap: int = 128, max_span_width: int = 30, keep_singletons: bool = True,
                 eval_batch_size: int = 16, max_documents: int | None = None,
                 metrics: list[str] | None = None, main_metric: str = "conll_f1"):
        if source not in SOURCES:
            raise KdxError(f"task.source={source!r} is unknown", f"use one of {list(SOURCES)}")
        if source == "files" and not data_dir:
            raise KdxError(f"task {name} reads *_gold_conll files but task.data_dir is not set",
                           "set task.data_dir=DIR (a folder of CoNLL-2012 files), or task.source=hub")
        if mentions not in MODES:
            raise KdxError(f"task.mentions={mentions!r} is unknown", f"use one of {list(MODES)}")
        if max_length < 8:
            raise KdxError(f"task.max_length={max_length} leaves no room for a segment", "use e.g. 384 or 512")
        if not 0 <= segment_overlap < max_length - 2:
            raise KdxError(f"task.segment_overlap={segment_overlap} must be below the segment length "
                           f"{max_length - 2} (max_length − 2)", "use e.g. a quarter or half of max_length")
        if main_metric.removesuffix("_f1") not in (*METRICS, "conll"):
            raise KdxError(f"task.main_metric={main_metric!r} is not a coreference score",
                           f"use conll_f1 or one of {[m + '_f1' for m in METRICS]}")
        self.source, self.data_dir, self.hub_id, self.hub_config = source, data_dir, hub_id, hub_config
        self.val_fraction, self.mode, self.max_length = val_fraction, mentions, max_length
        self.segment_overlap, self.max_span_width, self.keep_singletons = segment_overlap, max_span_width, keep_singletons
        self.eval_batch_size, self.max_documents = eval_batch_size, max_documents
        self.spec = TaskSpec(name=name, num_labels=2, metrics=list(metrics or []), main_metric=main_metric,
                             family="span_prediction", evaluator=lambda split: CorefEvaluator(self, split))
        self.tokenizer = None
        self._encoded: dict[str, "EncodedSplit"] = {}

    # ---- data ----------------------------------------------------------------------------------
    def parts(self) -> dict[str, list[Part]]:
        """Parts per split (train, val), read once."""
        if not hasattr(self, "_parts"):
            self._parts = self.load_parts()
        return self._parts

    def load_parts(self) -> dict[str, list[Part]]:
        if self.source == "hub":
            splits = {s: load_hub_parts(self.hub_id, self.hub_config, hub, self.max_documents)
                      for s, hub in HUB_SPLITS.items()}
        else:
            folder = Path(self.data_dir).expanduser()
            if not folder.is_dir():
                raise KdxError(f"task.data_dir={self.data_dir!r} is not a folder", "point it at the CoNLL files")
            train = [folder / n for n in TRAIN_FOLDERS if (folder / n).is_dir()]
            evals = [folder / n for n in EVAL_FOLDERS if (folder / n).is_dir()]
            if train and evals:
                splits = {"train": read_parts(conll_files(train[0])), "val": read_parts(conll_files(evals[0]))}
            else:
                splits = hold_out_parts(read_parts(conll_files(folder)), self.val_fraction)
        for split, parts in splits.items():
            if not parts:
                raise KdxError(f"task {self.spec.name}: no {split} parts under {self.data_dir or self.hub_id}",
                               "add *_gold_conll files (train/ and dev/ subfolders, or at least two parts)")
        return splits

    def training_texts(self):
        for part in self.parts()["train"]:
            for sentence in part.sentences:
                yield " ".join(part.words[i] for i in sentence)

    def encoded(self, split: str) -> "EncodedSplit":
        if self.tokenizer is None:
            raise KdxError(f"task {self.spec.name} has no tokenizer yet", "build its datamodule first")
        if split not in self._encoded:
            self._encoded[split] = EncodedSplit(self, self.parts()[split], self.tokenizer,
                                                detection=self.mode == "predicted",
                                                queries=split == "train" or self.mode == "gold")
        return self._encoded[split]

    def datamodule(self, tokenizer, data_cfg) -> "CorefDataModule":
        if tokenizer is None:
            raise KdxError(f"task {self.spec.name} needs a tokenizer", "use a BERT-family model pair")
        if tokenizer is not self.tokenizer:
            self.tokenizer, self._encoded = tokenizer, {}
        if data_cfg.max_length != self.max_length:
            raise KdxError(f"data.max_length={data_cfg.max_length} differs from task.max_length={self.max_length}",
                           "set task.max_length (data.max_length follows it)")
        return CorefDataModule(self, data_cfg)


class EncodedSplit:
    """A split's alignments, segments and examples for one tokenizer."""

    def __init__(self, task: CorefTask, parts: list[Part], tokenizer, detection: bool, queries: bool):
        self.task, self.parts = task, parts
        self.cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if self.cls is None or self.sep is None:
            raise KdxError(f"the tokenizer {type(tokenizer).__name__} has no [CLS]/[SEP] (or BOS/EOS) token",
                           "use a BERT-family encoder and its tokenizer")
        if "token_type_ids" not in getattr(tokenizer, "model_input_names", []):
            raise KdxError(f"the query mention is marked with token type ids, which the tokenizer "
                           f"{type(tokenizer).__name__} does not produce (its model has no segment embedding)",
                           "use a BERT-family encoder with token types (BERT, MiniLM, SpanBERT, ELECTRA)")
        self.pad = tokenizer.pad_token_id or 0
        self.alignments = [align(tokenizer, part.words) for part in parts]
        window = task.max_length - 2
        self.segments = [Segment(p, s, e) for p, a in enumerate(self.alignments)
                         for s, e in segments_of(len(a.subwords), window, task.segment_overlap)]
        self.examples: list[CorefExample] = []
        for segment in self.segments:
            part = parts[segment.part]
            if detection:
                self.add(segment, None, part.mentions)
            if queries:
                for members in part.clusters.values():
                    for query in members:
                        if inside(self.alignments[segment.part], query, segment):
                            self.add(segment, query, [m for m in members if m != query])

    def add(self, segment: Segment, query: Mention | None, targets: list[Mention]) -> None:
        self.examples.append(self.example(len(self.examples), segment, query, targets))

    def example(self, idx: int, segment: Segment, query: Mention | None, targets: list[Mention]) -> CorefExample:
        alignment = self.alignments[segment.part]
        ids = [self.cls, *alignment.subwords[segment.start:segment.end], self.sep]
        types = [0] * len(ids)
        if query is not None:
            first, last = alignment.subword_span(*query)
            for position in range(first, last + 1):
                types[position - segment.start + 1] = 1
        labels = [[0.0, 0.0] for _ in ids]
        labels[0] = labels[-1] = [IGNORE_INDEX, IGNORE_INDEX]
        for mention in targets:
            if inside(alignment, mention, segment):
                first, last = alignment.subword_span(*mention)
                labels[first - segment.start + 1][0] = 1.0
                labels[last - segment.start + 1][1] = 1.0
        return CorefExample(idx, segment, query, ids, types, labels)

    def word_scores(self, segment: Segment, logits: torch.Tensor) -> tuple[list[int], list[float], list[float]]:
        """The words wholly inside the segment, with their start score (first subword) and end
        score (last subword) from one example's (T, 2) logits."""
        alignment = self.alignments[segment.part]
        words = sorted({w for w in alignment.word_of[segment.start:segment.end]
                        if alignment.first[w] >= segment.start and alignment.last[w] < segment.end})
        offset = 1 - segment.start
        starts = [float(logits[alignment.first[w] + offset, 0]) for w in words]
        ends = [float(logits[alignment.last[w] + offset, 1]) for w in words]
        return words, starts, ends

    def decode(self, segment: Segment, logits: torch.Tensor) -> list[Mention]:
        words, starts, ends = self.word_scores(segment, logits)
        spans = decode_spans(starts, ends, self.task.max_span_width)
        return [(words[s], words[e]) for s, e in spans]


def collate(rows: list[CorefExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(r.input_ids) for r in rows)

    def padded(values, fill):
        return [v + [fill] * (longest - len(v)) for v in values]

    return {"input_ids": torch.tensor(padded([r.input_ids for r in rows], pad_token_id)),
            "attention_mask": torch.tensor(padded([[1] * len(r.input_ids) for r in rows], 0)),
            "token_type_ids": torch.tensor(padded([r.token_type_ids for r in rows], 0)),
            "labels": torch.tensor(padded([r.labels for r in rows], [IGNORE_INDEX, IGNORE_INDEX]), dtype=torch.float32),
            "idx": torch.tensor([r.idx for r in rows], dtype=torch.long)}


class ExampleDataset(Dataset):
    def __init__(self, examples: list[CorefExample]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


class CorefDataModule(L.LightningDataModule):
    def __init__(self, task: CorefTask, data_cfg):
        super().__init__()
        self.task, self.cfg = task, data_cfg

    def loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        encoded = self.task.encoded(split)
        if not encoded.examples:
            raise KdxError(f"task {self.task.spec.name}: the {split} split gives no examples (no mentions that fit "
                           f"a {self.task.max_length}-token segment)", "check the data, or raise task.max_length")
        return DataLoader(ExampleDataset(encoded.examples), batch_size=batch_size,
                          sampler=EpochShuffle(len(encoded.examples)) if train else None,
                          collate_fn=lambda rows: collate(rows, encoded.pad), num_workers=self.cfg.num_workers)

    def train_dataloader(self):
        return self.loader("train", self.cfg.batch_size, train=True)

    def val_dataloader(self):
        return [self.loader("val", self.task.eval_batch_size, train=False)]


class CorefEvaluator(SplitEvaluator):
    """Decodes every example of the split, merges the links of each part into clusters, and scores
    them against the key parts (all of kdx/coref/scorer.py's metrics, as `<metric>_f1`)."""

    def __init__(self, task: CorefTask, split: str):
        self.task, self.split = task, split
        self._key_mentions: dict[int, set[Mention]] = {}
        self.reset()

    def reset(self) -> None:
        self.links: dict[int, set] = {}
        self.mentions: dict[int, set] = {}
        self.last_scores: dict | None = None
        self.last_clusters: list[list[list[Mention]]] | None = None

    def update(self, model, batch: dict, logits) -> None:
        encoded = self.task.encoded(self.split)
        for row, idx in enumerate(batch["idx"].tolist()):
            example = encoded.examples[idx]
            spans = encoded.decode(example.segment, logits[row].detach().float().cpu())
            part = example.segment.part
            if example.query is None:
                self.mentions.setdefault(part, set()).update(spans)
                self.query_detected(model, encoded, example.segment, spans, batch["input_ids"].device)
            else:
                self.add_links(part, example.query, spans)

    def add_links(self, part: int, query: Mention, spans: list[Mention]) -> None:
        # gold mode: only key mentions can be found (None: any decoded span is a mention)
        candidates = self.key_mentions(part) if self.task.mode == "gold" else None
        self.mentions.setdefault(part, set()).add(query)
        for span in spans:
            if candidates is None or span in candidates:
                self.links.setdefault(part, set()).add((query, span))
                self.mentions[part].add(span)

    def key_mentions(self, part: int) -> set[Mention]:
        if part not in self._key_mentions:
            self._key_mentions[part] = set(self.task.encoded(self.split).parts[part].mentions)
        return self._key_mentions[part]

    @torch.no_grad()
    def query_detected(self, model, encoded: EncodedSplit, segment: Segment, mentions: list[Mention], device) -> None:
        """Predicted-mention mode: each mention found in the segment becomes a query there."""
        queries = [m for m in mentions if inside(encoded.alignments[segment.part], m, segment)]
        for first in range(0, len(queries), self.task.eval_batch_size):
            chunk = queries[first:first + self.task.eval_batch_size]
            rows = [encoded.example(-1, segment, query, []) for query in chunk]
            batch = {k: v.to(device) for k, v in collate(rows, encoded.pad).items() if k not in ("labels", "idx")}
            logits = model(**batch).logits.float().cpu()
            for query, row_logits in zip(chunk, logits):
                self.add_links(segment.part, query, encoded.decode(segment, row_logits))

    def clusters(self) -> list[list[list[Mention]]]:
        parts = self.task.encoded(self.split).parts
        result = []
        for index, part in enumerate(parts):
            mentions = set(part.mentions) if self.task.mode == "gold" else self.mentions.get(index, set())
            result.append(merge_clusters(sorted(mentions), self.links.get(index, set()), self.keep_singletons))
        return result

    @property
    def keep_singletons(self) -> bool:
        return self.task.keep_singletons

    def compute(self) -> dict[str, float]:
        parts = self.task.encoded(self.split).parts
        totals = Totals()
        clusters = self.clusters()
        for part, predicted in zip(parts, clusters):
            totals.add(part.cluster_list(), predicted)
        scores = totals.scores()
        self.last_scores, self.last_clusters = scores, clusters
        return {"conll_f1": scores["conll_f1"], **{f"{m}_f1": scores[m][2] for m in METRICS}}

    def write(self, folder: Path) -> None:
        """predicted.conll and key.conll (scorable with `python -m kdx.coref.score`), scores.json."""
        if self.last_clusters is None:
            self.compute()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parts = self.task.encoded(self.split).parts
        predicted = "".join(render_part(part, dict(enumerate(clusters)))
                            for part, clusters in zip(parts, self.last_clusters))
        (folder / "predicted.conll").write_text(predicted, encoding="utf-8")
        (folder / "key.conll").write_text("".join(render_part(part) for part in parts), encoding="utf-8")
        (folder / "scores.json").write_text(json.dumps(self.last_scores, indent=2) + "\n", encoding="utf-8")
