"""Sequence-level KD (Kim & Rush, 2016; docs/methods.md §8): the student is trained with
cross-entropy on the teacher's own outputs instead of the gold ones,

    L = CE(ŷ_T, σ(z_S)),   ŷ_T = the teacher's decoded answer to the prompt,

an approximation of matching the teacher's distribution over whole sequences by its mode.

Generation tasks: the prompt of each training example (input_ids up to the first labelled
position, kdx/tasks/families.py) is answered by the teacher with the method's generation settings
(beam search by default, as in the paper), once: answers are cached in memory and in
`<cache_dir>/seq_kd/<key>.json`, keyed by the teacher's weights, the settings and the prompt's
tokens, so every later epoch and trial with the same teacher reads them. Classification tasks:
the decoded "sequence" is one token, the teacher's argmax class. Citations in the teacher's
answers are learned as ordinary tokens.
"""

import json
import os
import tempfile
from pathlib import Path

import torch

from kdx.errors import KdxError
from kdx.hashing import digest
from kdx.losses import IGNORE_INDEX, hard_label_loss
from kdx.methods.base import Method, SetupContext, TrainStep
from kdx.models.generate import GenerationSettings, generate
from kdx.models.weights import weights_digest

SUPPORTED = ("classification", "generation")


def prompts_of(batch_ids: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Each row's prompt: the tokens up to and including the position that predicts the first
    answer token."""
    prompts = []
    for ids, row in zip(batch_ids.tolist(), labels):
        labelled = (row != IGNORE_INDEX).nonzero()
        if not len(labelled):
            raise KdxError("a generation example has no answer tokens, so it has no prompt boundary",
                           "every generation example needs at least one labelled answer token")
        prompts.append(ids[:int(labelled[0]) + 1])
    return prompts


class SequenceKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "seq_kd", generation: dict | None = None):
        super().__init__()
        self.name = name
        self.settings = GenerationSettings(**(generation or {}))
        self.answers: dict[str, list[int]] = {}
        self.cache_file: Path | None = None

    def setup(self, context: SetupContext) -> None:
        if context.spec.family not in SUPPORTED:
            raise KdxError(f"method={self.name} trains on the teacher's decoded outputs, which a "
                           f"{context.spec.family} task does not have",
                           f"use it with {' or '.join(SUPPORTED)} tasks, or method=token_kd")
        self.__dict__["teacher"] = context.teacher     # frozen, not a submodule: never checkpointed
        if context.spec.family != "generation":
            return
        tokenizer = context.tokenizer
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        if context.cache_dir is not None:
            key = digest({"teacher": weights_digest(context.teacher), "settings": vars(self.settings),
                          "eos": self.eos, "pad": self.pad})
            self.cache_file = Path(context.cache_dir) / "seq_kd" / f"{key}.json"
            if self.cache_file.exists():
                self.answers = json.loads(self.cache_file.read_text())

    def teacher_answers(self, prompts: list[list[int]]) -> list[list[int]]:
        keys = [digest(p, 24) for p in prompts]
        missing = {k: p for k, p in zip(keys, prompts) if k not in self.answers}
        if missing:
            generated = generate(self.teacher, list(missing.values()), self.settings, self.pad, self.eos)
            self.answers.update(zip(missing, generated.answers))
            self.save()
        return [self.answers[k] for k in keys]

    def save(self) -> None:
        """Atomic rewrite of the cache file (a temporary file renamed into place)."""
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".seq_kd.", dir=self.cache_file.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.answers, handle)
        os.replace(tmp, self.cache_file)

    def teacher_batch(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """The batch rebuilt with the teacher's answers: prompt + answer + end, labels on the answer."""
        prompts = prompts_of(step.inputs["input_ids"], step.labels)
        rows, labels = [], []
        for prompt, answer in zip(prompts, self.teacher_answers(prompts)):
            target = answer + [self.eos]
            rows.append(prompt + target)
            labels.append([IGNORE_INDEX] * (len(prompt) - 1) + target + [IGNORE_INDEX])
        longest = max(len(r) for r in rows)
        device = step.labels.device
        return {"input_ids": torch.tensor([r + [self.pad] * (longest - len(r)) for r in rows], device=device),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], device=device),
                "labels": torch.tensor([r + [IGNORE_INDEX] * (longest - len(r)) for r in labels], device=device)}

    def losses(self, step: TrainStep):
        if step.family == "generation":
            batch = self.teacher_batch(step)
            logits = step.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            ce = hard_label_loss(logits, batch["labels"], regression=False)
        else:
            ce = hard_label_loss(step.student_logits(), step.teacher_logits().argmax(-1), regression=False)
        return {"loss": ce, "seq_ce": ce}
