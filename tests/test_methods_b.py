"""MATE-KD, Combined-KD, backward-pass KD and Pro-KD: losses against their formulas written out
here, the straight-through Gumbel estimator, the generator/student alternation on real short runs,
the backward-pass ascent, the Pro-KD trajectory, the shared-vocabulary check, and each method end
to end on the synthetic task."""

import csv
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.methods.base import Progress, TrainStep
from kdx.methods.bpkd import BackwardPassKD
from kdx.methods.combined import CombinedKD
from kdx.methods.mate import MateKD, is_generator_step
from kdx.methods.perturb import perturbed_embeddings, straight_through_gumbel
from kdx.methods.prokd import ProKD
from kdx.models.hf import bert_from_arch
from kdx.models.tokenizer import build_tokenizer
from kdx.tasks.base import model_inputs
from kdx.tasks.synthetic import SyntheticTask
from kdx.teacher import Teacher

ARCH = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)
TEACHER_ARCH = {**ARCH, "hidden_size": 24, "intermediate_size": 48}
OPTIM = OmegaConf.create({"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "schedule": "linear"})


# ---- fixtures: a tiny text task, tokenizer and BERT pair -------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    task = SyntheticTask(train_size=40, val_size=16, num_labels=3)
    tokenizer = build_tokenizer(OmegaConf.create({"kind": "wordpiece", "vocab_size": 200}), task,
                                tmp_path_factory.mktemp("tok"))
    data = OmegaConf.create({"batch_size": 8, "eval_batch_size": 16, "max_length": 32, "num_workers": 0})
    return SimpleNamespace(task=task, spec=task.spec, tokenizer=tokenizer, vocab=len(tokenizer),
                           datamodule=lambda: task.datamodule(tokenizer, data))


def models(tiny, seed=0):
    torch.manual_seed(seed)
    teacher = bert_from_arch(3, tiny.vocab, **TEACHER_ARCH).eval()
    student = bert_from_arch(3, tiny.vocab, **ARCH)
    return teacher, student


def a_batch(tiny):
    dm = tiny.datamodule()
    dm.setup()
    return next(iter(dm.train_dataloader()))


def train_step(batch, student, teacher, phase=0, epoch=0, step=0, max_epochs=4, total_steps=40):
    def teacher_forward(**inputs):
        with torch.no_grad():
            return teacher(**inputs).logits
    return TrainStep(batch=batch, labels=batch["labels"], regression=False,
                     progress=Progress(epoch=epoch, step=step, max_epochs=max_epochs, total_steps=total_steps,
                                       phase=phase),
                     student_forward=lambda **inputs: student(**inputs).logits,
                     teacher_forward=teacher_forward, inputs=model_inputs(batch))


def fit(module, tiny, callbacks=(), max_epochs=1):
    module.manual_clip_val = 1.0
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, enable_model_summary=False, limit_val_batches=0,
                        callbacks=list(callbacks), deterministic=True)
    trainer.fit(module, datamodule=tiny.datamodule())
    return trainer


def by_hand_cross_entropy_soft(student_logits, teacher_logits):
    """mean_b [ −Σ_c softmax(z_T)_bc · log softmax(z_S)_bc ] with exp/sum written out."""
    p_t = teacher_logits.exp() / teacher_logits.exp().sum(-1, keepdim=True)
    log_p_s = student_logits - student_logits.exp().sum(-1, keepdim=True).log()
    return -(p_t * log_p_s).sum(-1).mean()


def by_hand_ce(logits, labels):
    log_p = logits - logits.exp().sum(-1, keepdim=True).log()
    return -log_p[torch.arange(len(labels)), labels].mean()


def by_hand_kl(student_logits, teacher_logits, tau):
    p_t = (teacher_logits / tau).exp() / (teacher_logits / tau).exp().sum(-1, keepdim=True)
    p_s = (student_logits / tau).exp() / (student_logits / tau).exp().sum(-1, keepdim=True)
    return (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * tau ** 2


def by_hand_mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


def annealing_phi_by_hand(epoch, e1, tau_max):
    """METHODS.md §2: temp counts 1 … τ_max, +1 at epoch e when e % (E1 // τ_max) == 0 and e > 0."""
    temp = 1
    for e in range(1, epoch + 1):
        if e % (e1 // tau_max) == 0:
            temp = min(tau_max, temp + 1)
    return temp / tau_max


# ---- straight-through Gumbel-softmax and the perturbed embeddings -----------------------------
def test_straight_through_gumbel_is_one_hot_forward_with_soft_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    noise = -torch.log(-torch.log(torch.rand(3, 5, 7)))
    weights = torch.randn(3, 5, 7)
    sample = straight_through_gumbel(logits, tau=1.0, gumbel_noise=noise)
    expected_hard = torch.zeros(3, 5, 7).scatter_(-1, (logits + noise).argmax(-1, keepdim=True), 1.0)
    assert torch.equal(sample.detach(), expected_hard)
    (sample * weights).sum().backward()
    # the gradient is that of the soft sample softmax(logits + g), written out here
    soft_logits = logits.detach().clone().requires_grad_(True)
    z = (soft_logits + noise).exp()
    ((z / z.sum(-1, keepdim=True)) * weights).sum().backward()
    assert torch.allclose(logits.grad, soft_logits.grad, atol=1e-6)
    assert logits.grad.abs().sum() > 0


def test_perturbed_embeddings_replace_only_masked_positions(tiny):
    _, student = models(tiny)
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    mask = torch.tensor([[False, True, False, True, False]])
    new_tokens = torch.tensor([[5, 40, 6, 41, 7]])
    one_hot = torch.nn.functional.one_hot(new_tokens, tiny.vocab).float()
    table = student.bert.embeddings.word_embeddings.weight
    out = perturbed_embeddings(student, ids, one_hot, mask)
    expected = torch.stack([table[41 if i == 3 else 40 if i == 1 else int(ids[0, i])] for i in range(5)])
    assert torch.allclose(out[0], expected)


# ---- MATE-KD --------------------------------------------------------------------------------
def mate(tiny, teacher, student, **kwargs):
    method = MateKD(generator={"arch": ARCH}, **kwargs)
    method.prepare(spec=tiny.spec, teacher=Teacher(teacher, "test"), student=student, tokenizer=tiny.tokenizer)
    return method


def fixed_perturbation(tiny, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = batch["input_ids"]
    content = (ids > 4) & batch["attention_mask"].bool()   # ids 0-4 are the special tokens
    mask = (torch.rand(ids.shape, generator=g) < 0.3) & content
    tokens = torch.randint(5, tiny.vocab, ids.shape, generator=g)
    return mask, torch.nn.functional.one_hot(tokens, tiny.vocab).float(), tokens


def perturbed_by_hand(model, batch, mask, tokens):
    table = model.get_input_embeddings().weight
    embeds = torch.where(mask.unsqueeze(-1), table[tokens], table[batch["input_ids"]])
    inputs = {**model_inputs(batch), "input_ids": None, "inputs_embeds": embeds}
    return model(**inputs).logits


def test_mate_student_loss_is_the_three_thirds_formula(tiny, monkeypatch):
    teacher, student = models(tiny)
    student.eval()
    method = mate(tiny, teacher, student)
    batch = a_batch(tiny)
    mask, one_hot, tokens = fixed_perturbation(tiny, batch)
    monkeypatch.setattr(method, "sample_perturbation", lambda step: (mask, one_hot))
    terms = method.student_losses(SimpleNamespace(student=student, teacher=teacher),
                                  train_step(batch, student, teacher))
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        s_adv, t_adv = perturbed_by_hand(student, batch, mask, tokens), perturbed_by_hand(teacher, batch, mask, tokens)
    ce = by_hand_ce(z_s, batch["labels"])
    div_adv, div_clean = by_hand_cross_entropy_soft(s_adv, t_adv), by_hand_cross_entropy_soft(z_s, z_t)
    assert torch.allclose(terms["ce"], ce, atol=1e-5)
    assert torch.allclose(terms["div_adv"], div_adv, atol=1e-5)
    assert torch.allclose(terms["div"], div_clean, atol=1e-5)
    assert torch.allclose(terms["loss"], (ce + div_adv + div_clean) / 3, atol=1e-5)
    assert mask.any()


def test_mate_alternates_10_generator_and_100_student_steps_per_110_batches():
    turns = [is_generator_step(step, 10, 100) for step in range(220)]
    assert sum(turns) == 20 and turns.count(False) == 200
    assert all(turns[cycle * 110 + i] == (i < 10) for cycle in range(2) for i in range(110))


class ParameterWatch(Callback):
    """Records, per training batch, whether the generator's and the student's weights changed."""

    def __init__(self):
        self.changed = []

    def snapshot(self, module):
        return ([p.detach().clone() for p in module.method.generator.parameters()],
                [p.detach().clone() for p in module.student.parameters()])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = self.snapshot(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        after = self.snapshot(module)
        self.changed.append(tuple(any(not torch.equal(a, b) for a, b in zip(old, new))
                                  for old, new in zip(self.before, after)))


def test_mate_real_run_steps_generator_and_student_on_their_own_batches(tiny):
    teacher, student = models(tiny)
    method = mate(tiny, teacher, student, generator_steps=2, student_steps=3, generator_lr=1e-3)
    watch = ParameterWatch()
    trainer = fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher), tiny, [watch])
    batches = 5   # 40 examples, batch 8
    expected = [(i % 5 < 2, i % 5 >= 2) for i in range(batches)]   # (generator changed, student changed)
    assert watch.changed == expected
    assert trainer.global_step == batches   # one optimizer step per batch, whichever model it updates
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_generator_is_checkpointed_and_not_in_the_student_optimizer(tiny):
    teacher, student = models(tiny)
    method = mate(tiny, teacher, student)
    module = DistillationModule(student, method, tiny.spec, OPTIM, teacher)
    assert any(k.startswith("method.generator.") for k in module.state_dict())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    student_params = {id(p) for p in student.parameters()}
    generator_params = {id(p) for p in method.generator.parameters()}
    extra = method.configure_extra_optimizers()[0]
    assert {id(p) for g in extra.param_groups for p in g["params"]} == generator_params
    assert not student_params & generator_params


def test_mate_checks_the_shared_vocabulary(tiny):
    teacher, _ = models(tiny)
    student = bert_from_arch(3, tiny.vocab + 7, **ARCH)
    with pytest.raises(KdxError, match="vocabularies differ"):
        mate(tiny, teacher, student)
    with pytest.raises(KdxError, match="vocabularies differ"):
        BackwardPassKD().prepare(teacher=Teacher(teacher, "test"), student=student, tokenizer=tiny.tokenizer)


# ---- Combined-KD ----------------------------------------------------------------------------
def test_combined_losses_follow_the_annealed_mse_formula(tiny, monkeypatch):
    teacher, student = models(tiny)
    student.eval()
    method = CombinedKD(tau_max=10, phase1_epochs=30, phase2_epochs=10, generator={"arch": ARCH})
    method.prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": 40, "max_steps": -1}}), spec=tiny.spec,
                   teacher=Teacher(teacher, "test"), student=student, tokenizer=tiny.tokenizer)
    assert [(p.name, p.max_epochs, p.restart_from_best) for p in method.phases()] == \
        [("anneal", 30, False), ("ce", 10, True)]
    batch = a_batch(tiny)
    mask, one_hot, tokens = fixed_perturbation(tiny, batch)
    monkeypatch.setattr(method, "sample_perturbation", lambda step: (mask, one_hot))
    module = SimpleNamespace(student=student, teacher=teacher)
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        s_adv, t_adv = perturbed_by_hand(student, batch, mask, tokens), perturbed_by_hand(teacher, batch, mask, tokens)
    for epoch in (0, 2, 7, 29):
        phi = annealing_phi_by_hand(epoch, 30, 10)
        terms = method.student_losses(module, train_step(batch, student, teacher, epoch=epoch, max_epochs=30))
        expected = (by_hand_mse(s_adv, phi * t_adv) + by_hand_mse(z_s, phi * z_t)) / 2
        assert torch.allclose(terms["loss"], expected, atol=1e-5), epoch
        assert terms["phi"].item() == pytest.approx(phi)
    phase2 = method.student_losses(module, train_step(batch, student, teacher, phase=1))
    assert torch.allclose(phase2["loss"], by_hand_ce(z_s, batch["labels"]), atol=1e-5)
    assert torch.allclose(method.adversarial_divergence(s_adv, t_adv, train_step(batch, student, teacher)),
                          by_hand_mse(s_adv, t_adv))


def test_combined_real_run_keeps_alternating_in_phase_two(tiny):
    teacher, student = models(tiny)
    method = CombinedKD(tau_max=2, phase1_epochs=1, phase2_epochs=1, generator_steps=2, student_steps=3,
                        generator_lr=1e-3, generator={"arch": ARCH})
    method.prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": 2, "max_steps": -1}}), spec=tiny.spec,
                   teacher=Teacher(teacher, "test"), student=student, tokenizer=tiny.tokenizer)
    watch = ParameterWatch()
    fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher, phase=1), tiny, [watch])
    assert watch.changed == [(i % 5 < 2, i % 5 >= 2) for i in range(5)]


# ---- backward-pass KD -----------------------------------------------------------------------
def bpkd(tiny, teacher, student, **kwargs):
    method = BackwardPassKD(**kwargs)
    method.prepare(teacher=Teacher(teacher, "test"), student=student, tokenizer=tiny.tokenizer)
    return method


def divergence_by_hand(teacher, student, teacher_inputs, student_inputs, tau):
    with torch.no_grad():
        return by_hand_kl(student(**student_inputs).logits, teacher(**teacher_inputs).logits, tau)


@pytest.mark.parametrize("norm", ["l2", "sign"])
def test_bpkd_ascent_increases_the_divergence_and_leaves_no_parameter_grads(tiny, norm):
    teacher, student = models(tiny)
    student.eval()
    eta = 0.05 if norm == "l2" else 0.002
    method = bpkd(tiny, teacher, student, eta=eta, steps=2, norm=norm, divergence="kl", temperature=1.0)
    inputs = model_inputs(a_batch(tiny))
    teacher_inputs, student_inputs = method.auxiliary_inputs(inputs, regression=False)
    assert all(p.grad is None for p in [*teacher.parameters(), *student.parameters()])
    before = divergence_by_hand(teacher, student, inputs, inputs, 1.0)
    after = divergence_by_hand(teacher, student, teacher_inputs, student_inputs, 1.0)
    assert after > before * 1.01
    # only content tokens moved: [CLS], [SEP] and padding keep their embeddings
    content = (inputs["input_ids"] > 4) & inputs["attention_mask"].bool()
    for model, moved in ((teacher, teacher_inputs), (student, student_inputs)):
        delta = moved["inputs_embeds"] - model.get_input_embeddings().weight[inputs["input_ids"]]
        assert delta[~content].abs().max() == 0
        assert delta[content].abs().max() > 0


def test_bpkd_l2_step_has_length_eta_in_the_joint_embedding_space(tiny):
    teacher, student = models(tiny)
    student.eval()
    method = bpkd(tiny, teacher, student, eta=0.3, steps=1, norm="l2", divergence="mse")
    inputs = model_inputs(a_batch(tiny))
    teacher_inputs, student_inputs = method.auxiliary_inputs(inputs, regression=False)
    squared = 0
    for model, moved in ((teacher, teacher_inputs), (student, student_inputs)):
        delta = moved["inputs_embeds"] - model.get_input_embeddings().weight[inputs["input_ids"]]
        squared = squared + delta.pow(2).sum((1, 2))
    assert torch.allclose(squared.sqrt(), torch.full_like(squared, 0.3), atol=1e-5)


def test_bpkd_projects_to_the_nearest_tokens(tiny):
    teacher, student = models(tiny)
    student.eval()
    inputs = model_inputs(a_batch(tiny))
    continuous = bpkd(tiny, teacher, student, eta=0.5, norm="sign", divergence="mse")
    projected = bpkd(tiny, teacher, student, eta=0.5, norm="sign", divergence="mse", project_to_tokens="l2")
    x_t, x_s = (moved["inputs_embeds"] for moved in continuous.auxiliary_inputs(inputs, regression=False))
    tokens, same = projected.auxiliary_inputs(inputs, regression=False)
    assert tokens is same and "inputs_embeds" not in tokens
    e_t, e_s = teacher.get_input_embeddings().weight, student.get_input_embeddings().weight
    distance = torch.cdist(x_t, e_t.expand(len(x_t), -1, -1)) ** 2 + torch.cdist(x_s, e_s.expand(len(x_s), -1, -1)) ** 2
    distance[..., :5] = float("inf")   # special tokens are never chosen
    content = (inputs["input_ids"] > 4) & inputs["attention_mask"].bool()
    expected = torch.where(content, distance.argmin(-1), inputs["input_ids"])
    assert torch.equal(tokens["input_ids"], expected)
    assert not torch.equal(expected, inputs["input_ids"])


def test_bpkd_loss_is_kd_on_x_plus_kd_on_x_prime(tiny):
    teacher, student = models(tiny)
    student.eval()
    method = bpkd(tiny, teacher, student, eta=0.1, alpha=0.3, temperature=2.0, ratio=0.5)
    batch = a_batch(tiny)
    terms = method.losses(train_step(batch, student, teacher))
    half = {k: v[:4] for k, v in model_inputs(batch).items()}     # ratio 0.5 of a batch of 8
    teacher_inputs, student_inputs = method.auxiliary_inputs(half, regression=False)
    with torch.no_grad():
        z_s, z_t = student(**model_inputs(batch)).logits, teacher(**model_inputs(batch)).logits
        kd_aux = by_hand_kl(student(**student_inputs).logits, teacher(**teacher_inputs).logits, 2.0)
    ce, kd = by_hand_ce(z_s, batch["labels"]), by_hand_kl(z_s, z_t, 2.0)
    assert torch.allclose(terms["kd_aux"], kd_aux, atol=1e-5)
    assert torch.allclose(terms["loss"], 0.7 * ce + 0.3 * (kd + kd_aux), atol=1e-5)


# ---- Pro-KD ---------------------------------------------------------------------------------
def trajectory(tiny, folder, count):
    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        path = folder / f"epoch-{i + 1:03d}.pt"
        torch.save(bert_from_arch(3, tiny.vocab, **TEACHER_ARCH).state_dict(), path)
        paths.append(path)
    return paths


def test_prokd_losses_against_their_formulas(tiny):
    torch.manual_seed(0)
    z_s, z_t, labels = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    step = SimpleNamespace(labels=labels, regression=False,
                           progress=Progress(epoch=5, step=50, max_epochs=14, total_steps=140))
    kd = ProKD(loss="kd_kl", alpha=0.4, temperature=3.0).distillation(z_s, z_t, step)
    assert torch.allclose(kd["loss"], 0.6 * by_hand_ce(z_s, labels) + 0.4 * by_hand_kl(z_s, z_t, 3.0), atol=1e-6)
    annealed = ProKD(loss="annealed_mse", tau_max=7).distillation(z_s, z_t, step)
    assert torch.allclose(annealed["loss"], by_hand_mse(z_s, annealing_phi_by_hand(5, 14, 7) * z_t), atol=1e-6)


def test_prokd_replay_visits_the_trajectory_in_order(tiny, tmp_path, monkeypatch):
    teacher, student = models(tiny)
    files = trajectory(tiny, tmp_path, 3)
    method = ProKD(teacher_mode="replay")
    method.prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": 1}}), spec=tiny.spec,
                   teacher=Teacher(teacher, "store", trajectory=files), student=student, tokenizer=tiny.tokenizer)
    import kdx.methods.prokd as prokd
    loads = []
    real_load = prokd.load_state
    monkeypatch.setattr(prokd, "load_state", lambda model, path: (loads.append(path), real_load(model, path))[1])

    class TeacherWeights(Callback):
        held = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            current = module.teacher.state_dict()
            self.held.append([i for i, f in enumerate(files)
                              if all(torch.equal(current[k], v) for k, v in torch.load(f).items())])

    watch = TeacherWeights()
    fit(DistillationModule(student, method, tiny.spec, OPTIM, teacher), tiny, [watch])
    # 5 steps in 3 equal stages: stage of step s is ⌊3s/5⌋
    assert watch.held == [[3 * s // 5] for s in range(5)]
    assert loads == files


def test_prokd_ckpt_interval_subsamples_and_keeps_the_last(tiny, tmp_path):
    teacher, student = models(tiny)
    files = [tmp_path / f"{i}.pt" for i in range(7)]
    method = ProKD(ckpt_interval=3)
    method.prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": 1}}),
                   teacher=Teacher(teacher, "store", trajectory=files), student=student)
    assert method.checkpoints == [files[2], files[5], files[6]]
    with pytest.raises(KdxError, match="trajectory"):
        ProKD().prepare(cfg=OmegaConf.create({"trainer": {"max_epochs": 1}}),
                        teacher=Teacher(teacher, "checkpoint.pt"), student=student)


def test_prokd_online_trains_the_teacher_alongside(tiny):
    _, student = models(tiny)
    cfg = OmegaConf.create({"trainer": {"max_epochs": 1}, "model": {"name": "tiny", "teacher": {
        "_target_": "kdx.models.hf.bert_from_arch", **TEACHER_ARCH}}, "teacher_training": {"lr": 1e-3},
        "optim": {"weight_decay": 0.01}})
    method = ProKD(teacher_mode="online", ckpt_interval=2)
    assert not method.needs_teacher and method.manual_optimization
    method.prepare(cfg=cfg, spec=tiny.spec, teacher=None, student=student, tokenizer=tiny.tokenizer)

    class Watch(Callback):
        rows = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.online = {k: v.clone() for k, v in module.method.online_teacher.state_dict().items()}
            self.student = [p.detach().clone() for p in module.student.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            m = module.method
            target_is_fresh = all(torch.equal(v, self.online[k]) for k, v in m.target_teacher.state_dict().items())
            teacher_moved = any(not torch.equal(v, self.online[k]) for k, v in m.online_teacher.state_dict().items())
            student_moved = any(not torch.equal(a, b) for a, b in zip(self.student, module.student.parameters()))
            self.rows.append((target_is_fresh, teacher_moved, student_moved))

    watch = Watch()
    trainer = fit(DistillationModule(student, method, tiny.spec, OPTIM, None), tiny, [watch])
    # the snapshot T^(i) is refreshed on steps 0, 2, 4, ...; both models learn on every batch
    assert watch.rows == [(s % 2 == 0, True, True) for s in range(5)]
    assert trainer.global_step == 5   # counts student updates only
    assert all(not p.requires_grad for p in method.target_teacher.parameters())


# ---- end to end -----------------------------------------------------------------------------
SMALL = ("task=synthetic", "task.train_size=200", "task.val_size=100", "teacher_training.max_epochs=2",
         "trainer.max_epochs=2", "trainer.log_every_n_steps=1")
ALTERNATE = ("method.generator_steps=2", "method.student_steps=5")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("method, extra, terms", [
    ("mate", ALTERNATE, {"loss", "ce", "div", "div_adv", "generator_div", "generator_loss"}),
    ("combined", ALTERNATE, {"loss", "annealed_mse", "annealed_mse_adv", "phi", "ce", "generator_div"}),
    ("bpkd", (), {"loss", "ce", "kd", "kd_aux"}),
    ("prokd", ("teacher_training.trajectory_every_n_steps=3",), {"loss", "ce", "kd", "stage"}),
    ("prokd", ("method.teacher_mode=online", "method.final_ce_epochs=1"), {"loss", "ce", "kd", "teacher_ce"}),
])
def test_method_runs_end_to_end(run_kdx, tmp_path, shared_cache, method, extra, terms):
    results = run_kdx(*SMALL, f"method={method}", *extra, tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed" and results["method"] == method
    assert 0.0 <= results["main_metric"]["value"] <= 1.0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    logs = list((tmp_path / "run" / "csv").rglob("metrics.csv"))
    columns = set().union(*(next(csv.reader(open(f))) for f in logs))
    assert {f"train/{t}" for t in terms} <= columns
