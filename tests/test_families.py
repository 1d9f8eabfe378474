"""Task families: the TaskSpec defaults, the batch contracts, and a token-level language-modelling
task run through the real LightningModule with method=kd on a 2-layer LLaMA pair — the KD term
averaged over real tokens only, the CE over labelled tokens only, token accuracy as the metric."""

import math

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.methods.base import Progress, TrainStep
from kdx.methods.kd import KD
from kdx.tasks.base import TaskSpec, model_inputs
from kdx.tasks.families import FAMILIES, check_batch
from kdx.tasks.synthetic import SyntheticTask
from kdx.training import evaluate

VOCAB = 24
LM_SPEC = TaskSpec(name="toy-lm", num_labels=VOCAB, metrics=["token_acc"], main_metric="token_acc",
                   family="language_modeling")


def test_spec_family_defaults_and_validation():
    assert TaskSpec(name="a", num_labels=1, metrics=["mse"], main_metric="mse").family == "regression"
    assert TaskSpec(name="b", num_labels=3, metrics=["acc"], main_metric="acc").family == "classification"
    assert set(FAMILIES) == {"classification", "regression", "language_modeling", "generation", "span_prediction",
                             "question_answering"}
    with pytest.raises(KdxError, match="family"):
        TaskSpec(name="c", num_labels=3, metrics=[], main_metric="acc", family="translation")


def lm_batch(sequences: list[list[int]]) -> dict:
    """Right-padded token sequences; labels are the next token (−100 at the last real token and on padding)."""
    longest = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, seq in enumerate(sequences):
        ids[b, :len(seq)] = torch.tensor(seq)
        mask[b, :len(seq)] = 1
        labels[b, :len(seq) - 1] = torch.tensor(seq[1:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "idx": torch.arange(len(sequences))}


def counting_sequences(count: int, seed: int) -> list[list[int]]:
    """Runs of consecutive token ids (mod VOCAB): a pattern a tiny LM can learn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        start, length = int(torch.randint(VOCAB, (1,), generator=g)), int(torch.randint(4, 9, (1,), generator=g))
        out.append([(start + k) % VOCAB for k in range(length)])
    return out


def test_batch_contracts_accept_real_batches_and_refuse_wrong_shapes():
    task = SyntheticTask(train_size=8, val_size=8, num_labels=3)

    class Tok:   # the synthetic task's words as ids: enough for a classification batch
        pad_token_id = 0

        def __call__(self, texts, truncation, max_length):
            return {"input_ids": [[1 + int(w[1:]) for w in t.split()][:max_length] for t in texts],
                    "attention_mask": [[1] * min(len(t.split()), max_length) for t in texts]}

    dm = task.datamodule(Tok(), OmegaConf.create({"batch_size": 4, "eval_batch_size": 4, "max_length": 16,
                                                  "num_workers": 0}))
    dm.setup()
    check_batch("classification", next(iter(dm.train_dataloader())))
    check_batch("language_modeling", lm_batch([[1, 2, 3], [4, 5]]))
    with pytest.raises(ValueError, match="dims"):
        check_batch("classification", lm_batch([[1, 2, 3]]))
    with pytest.raises(ValueError, match="float"):
        check_batch("span_prediction", {"labels": torch.zeros(2, 3, 2, dtype=torch.long), "idx": torch.arange(2)})


def llama(layers: int, hidden: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=32, use_cache=False))


def test_token_level_kd_masks_padding_and_unlabelled_tokens():
    teacher, student = llama(2, 32, seed=0), llama(2, 16, seed=1)
    method = KD(alpha=0.5, temperature=2.0)
    module = DistillationModule(student, method, LM_SPEC, optim_cfg=None, teacher=teacher)
    batch = lm_batch([[3, 4, 5, 6, 7], [9, 10, 11]])
    step = TrainStep(batch=batch, labels=batch["labels"], family="language_modeling",
                     progress=Progress(0, 0, 1, 1), inputs=model_inputs(batch),
                     student_forward=module.student_forward, teacher_forward=module.teacher_forward)
    student.eval()
    terms = method.losses(step)

    with torch.no_grad():
        z_s = student(**model_inputs(batch)).logits
        z_t = teacher(**model_inputs(batch)).logits
    ce, ce_count, kd, kd_count = 0.0, 0, 0.0, 0
    for b in range(2):
        for t in range(batch["input_ids"].shape[1]):
            if batch["labels"][b, t] != IGNORE_INDEX:
                row = z_s[b, t].tolist()
                log_norm = math.log(sum(math.exp(v) for v in row))
                ce += log_norm - row[int(batch["labels"][b, t])]
                ce_count += 1
            if batch["attention_mask"][b, t]:
                s, te = [v / 2 for v in z_s[b, t].tolist()], [v / 2 for v in z_t[b, t].tolist()]
                ls, lt = math.log(sum(math.exp(v) for v in s)), math.log(sum(math.exp(v) for v in te))
                kd += sum(math.exp(b_ - lt) * ((b_ - lt) - (a_ - ls)) for a_, b_ in zip(s, te))
                kd_count += 1
    assert ce_count == 6 and kd_count == 8      # 4 + 2 labelled tokens; 5 + 3 real tokens
    assert terms["ce"].item() == pytest.approx(ce / ce_count, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(4 * kd / kd_count, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(0.5 * ce / ce_count + 0.5 * 4 * kd / kd_count, rel=1e-4)


class LMData(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.train = counting_sequences(64, seed=0)
        self.val = counting_sequences(16, seed=1)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=8, shuffle=False, collate_fn=lm_batch)

    def val_dataloader(self):
        return [DataLoader(self.val, batch_size=8, collate_fn=lm_batch)]


def test_language_modelling_task_trains_with_kd_and_reports_token_accuracy():
    teacher, student = llama(2, 32, seed=0), llama(1, 16, seed=1)
    optim = OmegaConf.create({"name": "adamw", "lr": 1e-2, "weight_decay": 0.0, "schedule": "constant"})
    module = DistillationModule(student, KD(alpha=0.5), LM_SPEC, optim, teacher=teacher)
    data = LMData()
    before = evaluate(student, LM_SPEC, data)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, datamodule=data)
    after = evaluate(student, LM_SPEC, data)

    student.eval()
    correct = total = 0
    for batch in data.val_dataloader()[0]:
        with torch.no_grad():
            predicted = student(**model_inputs(batch)).logits.argmax(-1)
        keep = batch["labels"] != IGNORE_INDEX
        correct += int((predicted[keep] == batch["labels"][keep]).sum())
        total += int(keep.sum())
    assert after["val/token_acc"] == pytest.approx(correct / total, abs=1e-6)
    assert after["val/loss"] < before["val/loss"]          # it learned the counting pattern


class LastTokenAgreement:
    """A task-owned evaluator: share of sequences whose last labelled token the model predicts,
    accumulated over the split; `write` leaves the per-sequence verdicts."""

    def __init__(self, split: str):
        self.split, self.verdicts = split, []

    def reset(self):
        self.verdicts = []

    def update(self, model, batch, logits):
        last = (batch["labels"] != IGNORE_INDEX).sum(1) - 1
        rows = torch.arange(len(last))
        self.verdicts += (logits[rows, last].argmax(-1) == batch["labels"][rows, last]).tolist()

    def compute(self):
        return {"last_token_acc": sum(self.verdicts) / len(self.verdicts), "sequences": len(self.verdicts)}

    def write(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "verdicts.txt").write_text("".join("1" if v else "0" for v in self.verdicts))


def test_a_task_evaluator_sees_the_whole_split_and_writes_its_files(tmp_path):
    spec = TaskSpec(name="toy-lm", num_labels=VOCAB, metrics=["token_acc"], main_metric="token_acc",
                    family="language_modeling", evaluator=LastTokenAgreement)
    student, data = llama(1, 16, seed=1), LMData()
    metrics = evaluate(student, spec, data, artifacts_dir=tmp_path)
    verdicts = (tmp_path / "val" / "verdicts.txt").read_text()
    assert metrics["val/sequences"] == len(data.val) == len(verdicts)
    assert metrics["val/last_token_acc"] == pytest.approx(verdicts.count("1") / len(verdicts))
