"""HAGRID (Kamalloo et al., 2023): answer a query from numbered quotes, citing them inline (`task=hagrid`).

A generation-family task (kdx/tasks/families.py): input_ids = prompt + answer + end token, the
labels −100 on the prompt, so only the answer (citations included, as ordinary tokens) is learned.

- Data: `task.data_dir` with train.jsonl and dev.jsonl in the HAGRID schema, or the hub files
  `miracl/hagrid` hagrid-v1.0-en/{train,dev}.jsonl read as JSONL (kdx/tasks/hagrid_data.py).
- Training examples: per query, the answers `task.gold_answer` picks (one, or every answer).
- Evaluation is per query: one example per dev query (its loss and perplexity read the policy's
  gold answer), and an evaluator that generates an answer from the prompt and scores it against
  the query's references (`task.references`: all its answers, or the gold one) — ROUGE-L, BLEU,
  citation precision / recall / F1, optional NLI attribution, and generation speed (tokens/s).
  After the final evaluation it writes `<trial>/val/generations.jsonl`.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.models.generate import GenerationSettings, generate
from kdx.tasks.answer_metrics import EntailmentJudge, Scored, score_answers
from kdx.tasks.base import SplitEvaluator, Task, TaskSpec
from kdx.tasks.citations import best_citation_score, cited_ids
from kdx.tasks.hagrid_data import GOLD_POLICIES, Query, gold_answers, read_queries
from kdx.tasks.quoted_prompt import PromptEncoder, Templates
from kdx.tasks.sampling import EpochShuffle

HUB_ID = "miracl/hagrid"
HUB_FILES = {"train": "hagrid-v1.0-en/train.jsonl", "val": "hagrid-v1.0-en/dev.jsonl"}
LOCAL_FILES = {"train": "train.jsonl", "val": "dev.jsonl"}
REFERENCES = ("all", "gold")
GENERATIONS_FILE = "generations.jsonl"


@dataclass
class Encoded:
    """One example: prompt and answer token ids, and which query (within its split) it belongs to."""

    prompt: list[int]
    answer: list[int]      # ends with the end token
    query: int


def end_token(tokenizer) -> int:
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise KdxError("the tokenizer has no end-of-sequence (or separator) token to end answers with",
                       "use a tokenizer with an eos_token")
    return eos


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token(tokenizer)


class HagridTask(Task):
    def __init__(self, name: str = "hagrid", data_dir: str | None = None, hub_id: str = HUB_ID,
                 gold_answer: Literal[GOLD_POLICIES] = "attributable_informative",
                 references: Literal[REFERENCES] = "all",
                 prompt_template: str = "{quotes}\n{query}", quote_template: str = "[{idx}] {text}\n",
                 answer_prefix: str = " ", max_length: int = 512, max_answer_tokens: int = 128,
                 max_train_queries: int | None = None, max_eval_queries: int | None = None,
                 eval_batch_size: int = 8, generation: dict | None = None, nli_model: str | None = None,
                 metrics: list[str] | None = None, main_metric: str = "rougeL"):
        if gold_answer not in GOLD_POLICIES:
            raise KdxError(f"task.gold_answer={gold_answer!r} is unknown", f"use one of {list(GOLD_POLICIES)}")
        if references not in REFERENCES:
            raise KdxError(f"task.references={references!r} is unknown", f"use one of {list(REFERENCES)}")
        if not 1 <= max_answer_tokens < max_length:
            raise KdxError(f"task.max_answer_tokens={max_answer_tokens} does not fit task.max_length={max_length}",
                           "keep 1 <= max_answer_tokens < max_length (the prompt gets the rest)")
        self.data_dir, self.hub_id = data_dir, hub_id
        self.gold_answer, self.references = gold_answer, references
        self.templates = Templates(prompt_template, quote_template)
        self.answer_prefix, self.max_length, self.max_answer_tokens = answer_prefix, max_length, max_answer_tokens
        self.limits = {"train": max_train_queries, "val": max_eval_queries}
        self.eval_batch_size, self.nli_model = eval_batch_size, nli_model
        self.generation = GenerationSettings(**(generation or {}))
        self.spec = TaskSpec(name=name, num_labels=0, metrics=list(metrics or ["perplexity", "token_acc"]),
                             main_metric=main_metric, family="generation", evaluator=self.evaluator)
        self.encoded: dict[str, list[Encoded]] = {}
        self.tokenizer = None
        self._judge = None

    # ---- data --------------------------------------------------------------------------------
    def queries(self) -> dict[str, list[Query]]:
        """Validated queries per split (train, val), read once."""
        if not hasattr(self, "_queries"):
            self._queries = {split: read_queries(path)[:self.limits[split]] for split, path in self.files().items()}
        return self._queries

    def files(self) -> dict[str, Path]:
        if self.data_dir:
            folder = Path(self.data_dir).expanduser()
            if not folder.is_dir():
                raise KdxError(f"task.data_dir={self.data_dir!r} is not a folder",
                               "point it at a folder with train.jsonl and dev.jsonl in the HAGRID schema")
            return {split: folder / name for split, name in LOCAL_FILES.items()}
        return {split: hub_file(self.hub_id, name) for split, name in HUB_FILES.items()}

    def training_texts(self):
        yield self.templates.prompt
        for query in self.queries()["train"]:
            yield query.query
            yield from (q.text for q in query.quotes)
            yield from (a.text for a in query.answers)

    def encode(self, tokenizer) -> None:
        prompt_encoder = PromptEncoder(tokenizer, self.templates, self.max_length - self.max_answer_tokens - 1)
        eos = end_token(tokenizer)

        def answer_ids(text: str) -> list[int]:
            ids = tokenizer(self.answer_prefix + text, add_special_tokens=False)["input_ids"]
            return ids[:self.max_answer_tokens] + [eos]

        # Training: every answer the policy picks. Evaluation: one example per query, whose
        # teacher-forced loss reads one gold answer (HAGRID's rule when the policy takes them all).
        eval_policy = "attributable_informative" if self.gold_answer == "all" else self.gold_answer
        for split, queries in self.queries().items():
            examples = []
            for q, query in enumerate(queries):
                prompt = prompt_encoder(query.query, [(quote.idx, quote.text) for quote in query.quotes])
                targets = gold_answers(query, self.gold_answer) if split == "train" else \
                    gold_answers(query, eval_policy)[:1]
                examples += [Encoded(prompt, answer_ids(a.text), q) for a in targets]
            self.encoded[split] = examples

    def datamodule(self, tokenizer, data_cfg) -> "HagridDataModule":
        if tokenizer is None:
            raise KdxError(f"task {self.spec.name} needs a tokenizer", "use a model pair with a tokenizer")
        self.spec.num_labels = len(tokenizer)   # outputs per token: the vocabulary
        if self.tokenizer is not tokenizer:
            self.tokenizer = tokenizer
            self.encode(tokenizer)
        return HagridDataModule(self, tokenizer, data_cfg)

    # ---- evaluation --------------------------------------------------------------------------
    def evaluator(self, split: str) -> "AnswerEvaluator":
        return AnswerEvaluator(self, split)

    def reference_texts(self, query: Query) -> list[str]:
        if self.references == "gold":
            return [a.text for a in gold_answers(query, "attributable_informative")]
        return [a.text for a in query.answers]

    def entailment_judge(self):
        if self.nli_model and self._judge is None:
            self._judge = EntailmentJudge(self.nli_model)
        return self._judge


def hub_file(hub_id: str, filename: str) -> Path:
    """A HAGRID JSONL file from the hub (the dataset's loading script does not run under current
    `datasets`, so the file itself is fetched and read)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=hub_id, filename=filename, repo_type="dataset"))
    except Exception as err:   # offline, gated, unknown file: the hub's error types vary by version
        raise KdxError(f"cannot fetch {filename} of {hub_id!r} from the hub ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:200] if str(err) else ''})",
                       "download train.jsonl and dev.jsonl and set task.data_dir=DIR") from None


class Examples(Dataset):
    """input_ids = prompt + answer; labels[t] = input_ids[t + 1] on answer tokens, −100 elsewhere."""

    def __init__(self, examples: list[Encoded]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        ex = self.examples[i]
        ids = ex.prompt + ex.answer
        labels = [IGNORE_INDEX] * (len(ex.prompt) - 1) + ex.answer + [IGNORE_INDEX]
        return {"input_ids": ids, "labels": labels, "idx": i}


class RightPad:
    def __init__(self, pad: int):
        self.pad = pad

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)

        def padded(key, value):
            return torch.tensor([r[key] + [value] * (longest - len(r[key])) for r in rows])

        return {"input_ids": padded("input_ids", self.pad),
                "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"]))
                                                for r in rows]),
                "labels": padded("labels", IGNORE_INDEX),
                "idx": torch.tensor([r["idx"] for r in rows])}


class HagridDataModule(L.LightningDataModule):
    def __init__(self, task: HagridTask, tokenizer, data_cfg):
        super().__init__()
        self.task, self.cfg = task, data_cfg
        self.collate = RightPad(pad_id(tokenizer))
        self.datasets = {split: Examples(examples) for split, examples in task.encoded.items()}

    def train_dataloader(self):
        train = self.datasets["train"]
        return DataLoader(train, batch_size=self.cfg.batch_size, sampler=EpochShuffle(len(train)),
                          collate_fn=self.collate, num_workers=self.cfg.num_workers)

    def val_dataloader(self):
        # logits over the vocabulary and generation: evaluation batches are the task's own size
        return [DataLoader(self.datasets["val"], batch_size=self.task.eval_batch_size, collate_fn=self.collate,
                           num_workers=self.cfg.num_workers)]


class AnswerEvaluator(SplitEvaluator):
    """Generates an answer for every query of the split and scores them against the references."""

    def __init__(self, task: HagridTask, split: str):
        self.task, self.split = task, split
        self.reset()

    def reset(self) -> None:
        self.answers: dict[int, str] = {}
        self.tokens, self.seconds = 0, 0.0

    def update(self, model, batch: dict, logits) -> None:
        examples = [self.task.encoded[self.split][int(i)] for i in batch["idx"]]
        tokenizer = self.task.tokenizer
        generated = generate(model, [ex.prompt for ex in examples], self.task.generation, pad_id(tokenizer),
                             end_token(tokenizer))
        for ex, ids in zip(examples, generated.answers):
            self.answers[ex.query] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        self.tokens += generated.tokens
        self.seconds += generated.seconds

    def scored(self) -> list[tuple[Query, Scored]]:
        queries = self.task.queries()[self.split]
        return [(queries[q], Scored(answer, self.task.reference_texts(queries[q]), queries[q].quote_texts))
                for q, answer in sorted(self.answers.items())]

    def compute(self) -> dict[str, float]:
        if not self.answers:
            return {}
        metrics = score_answers([s for _, s in self.scored()], self.task.entailment_judge())
        metrics["tokens_per_s"] = self.tokens / self.seconds if self.seconds else 0.0
        metrics["generated_tokens"] = float(self.tokens)
        return metrics

    def write(self, folder: Path) -> None:
        rows = []
        for query, item in self.scored():
            score = best_citation_score(item.answer, item.references)
            rows.append({"query_id": query.query_id, "query": query.query, "answer": item.answer,
                         "cited": sorted(cited_ids(item.answer)), "references": item.references,
                         "citation_precision": score.precision, "citation_recall": score.recall})
        write_lines_atomic(Path(folder) / GENERATIONS_FILE, [json.dumps(r) for r in rows])


def write_lines_atomic(path: Path, lines: list[str]) -> None:
    """A temporary file renamed into place: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
