"""EchoAtt (method=echoatt): the stage-1 terms against the formulas written out by hand, the
two-stage budget, and a trial on a small text sample through both stages, resumed."""

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdx.errors import KdxError
from kdx.methods.base import Budget, Progress, SetupContext, TrainStep
from kdx.methods.echoatt import EchoAtt
from kdx.models.echoatt import share_attention
from kdx.models.outputs import OutputRequest, forward
from kdx.tasks.base import TaskSpec

LM_SPEC = TaskSpec(name="lm/text", num_labels=40, metrics=["perplexity"], main_metric="perplexity",
                   family="language_modeling")


def pair():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=24, num_hidden_layers=6, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=32, initializer_range=0.3,
                         attn_implementation="eager")
    teacher = LlamaForCausalLM(config).eval()
    return teacher, share_attention(copy.deepcopy(teacher), [2, 3, 5 - 1])   # blocks [2, 3, 4]


def step_of(student, teacher, phase=0):
    ids = torch.randint(3, 40, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0, 0]])
    labels = torch.where(mask.bool(), torch.roll(ids, -1, 1), -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    request = OutputRequest(hidden_states=True)

    def teacher_forward(**inputs):
        with torch.no_grad():
            return forward(teacher, inputs, request)

    return TrainStep(batch=batch, labels=labels, family="language_modeling",
                     progress=Progress(epoch=0, step=0, max_epochs=2, total_steps=4, phase=phase),
                     inputs={"input_ids": ids, "attention_mask": mask},
                     student_forward=lambda **inputs: forward(student, inputs, request),
                     teacher_forward=teacher_forward)


def log_softmax(row):
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def test_stage1_terms_follow_the_formulas():
    teacher, student = pair()
    with torch.no_grad():   # make the student differ everywhere, not only in the shared layers
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    method = EchoAtt()
    method.setup(SetupContext(spec=LM_SPEC, student=student, teacher=teacher))
    assert method.block_ends == [4]
    step = step_of(student, teacher)
    terms = method.losses(step)

    s, t = step.student(), step.teacher()
    real = [(b, i) for b in range(2) for i in range(7) if step.inputs["attention_mask"][b, i]]
    s_hidden, t_hidden = s.hidden_states[5].tolist(), t.hidden_states[5].tolist()   # output of layer 4
    mse = sum(sum((x - y) ** 2 for x, y in zip(s_hidden[b][i], t_hidden[b][i])) / 24 for b, i in real) / len(real)
    kl = hard = 0.0
    for b, i in real:
        log_s, log_t = log_softmax(s.logits[b, i].tolist()), log_softmax(t.logits[b, i].tolist())
        kl += sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_t, log_s))
        hard -= log_s[max(range(40), key=lambda c: log_t[c])]
    kl, hard = kl / len(real), hard / len(real)
    assert math.isclose(terms["intermediate"].item(), mse, rel_tol=1e-4)
    assert math.isclose(terms["soft"].item(), kl, rel_tol=1e-4)
    assert math.isclose(terms["hard"].item(), hard, rel_tol=1e-4)
    assert math.isclose(terms["loss"].item(), 0.25 * mse + 0.25 * kl + 0.5 * hard, rel_tol=1e-4)
    terms["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())


def test_stage2_is_next_token_cross_entropy():
    teacher, student = pair()
    method = EchoAtt()
    method.setup(SetupContext(spec=LM_SPEC, student=student, teacher=teacher))
    step = step_of(student, teacher, phase=1)
    terms = method.losses(step)
    logits, labels = step.student().logits, step.labels
    picked = [log_softmax(logits[b, i].tolist())[labels[b, i]] for b in range(2) for i in range(7) if labels[b, i] >= 0]
    assert set(terms) == {"loss", "ce"}
    assert math.isclose(terms["ce"].item(), -sum(picked) / len(picked), rel_tol=1e-4)


def test_stages_split_the_budget():
    phases = EchoAtt().phases(Budget(max_epochs=4, max_steps=10))
    assert [(p.name, p.max_epochs, p.max_steps, p.restart_from_best) for p in phases] == [
        ("kd", 2, 5, False), ("ce", 2, 5, True)]
    assert [p.max_epochs for p in EchoAtt(stage1_epochs=3, stage2_epochs=1).phases(Budget(max_epochs=9))] == [3, 1]
    with pytest.raises(KdxError, match="max_epochs >= 2"):
        EchoAtt().phases(Budget(max_epochs=1))


def test_it_needs_an_echoatt_pair_and_a_language_model_task():
    teacher, student = pair()
    with pytest.raises(KdxError, match="language-modelling"):
        EchoAtt().setup(SetupContext(spec=TaskSpec(name="sst2", num_labels=2, metrics=["acc"], main_metric="acc"), student=student, teacher=teacher))
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = 3
    with pytest.raises(KdxError, match="init=shared"):
        EchoAtt().setup(SetupContext(spec=LM_SPEC, student=LlamaForCausalLM(config), teacher=teacher))


def logged(run_dir: Path, phase: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    with open(run_dir / "csv" / phase / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if value not in ("", None):
                    values.setdefault(name, []).append(float(value))
    return values


def test_both_stages_run_on_a_text_sample_and_resume(run_kdx, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "c.txt").write_text("\n".join(f"the cat sat on mat number {i % 7} and slept" for i in range(80)))
    overrides = ["task=lm/text", f"task.data_dir={corpus}", "model=tiny_llama_echoatt", "method=echoatt",
                 "trainer.max_steps=4", "data.max_length=16", "trainer.log_every_n_steps=1"]
    results = run_kdx(*overrides, tmp_path=tmp_path)
    assert results["status"] == "completed" and results["steps"] == 4
    stage1, stage2 = logged(tmp_path / "run", "phase1-kd"), logged(tmp_path / "run", "phase2-ce")
    assert {"train/loss", "train/intermediate", "train/soft", "train/hard"} <= set(stage1)
    assert {"train/loss", "train/ce"} <= set(stage2) and "train/soft" not in stage2
    # the student is the teacher without the query/key projections of layers 1 and 2 (hidden 64;
    # 4 query and 2 key-value heads of 16 dimensions)
    assert results["params"]["teacher"] - results["params"]["student"] == 2 * (64 * 64 + 64 * 32)
    assert 1 < results["metrics"]["val/perplexity"] < 1000

    # a run killed in stage 2 resumes there: stage 1 is not run again, stage 2 continues from its last.ckpt
    done = tmp_path / "run" / "checkpoints" / "phase2-ce" / "phase_done.json"
    done.unlink()
    (tmp_path / "run" / "results.json").unlink()
    again = run_kdx(*overrides, tmp_path=tmp_path)
    assert again["status"] == "completed" and again["steps"] == 4
    assert again["metrics"]["val/perplexity"] == pytest.approx(results["metrics"]["val/perplexity"], rel=1e-5)
