"""The reproduction-fidelity fixes of issue 11, each against a computation written out here: the
Φ staircase under a step cap, the phase split's rounding, weight decay without biases and norm
weights, MATE-KD's official optimiser recipe (student Adam/warmup/clip 5 stepping on student
batches only, generator with linear decay), and Pro-KD's de-duplicated trajectory."""

import csv
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from kdx.distill import DistillationModule, epochs_that_run, lr_multiplier, parameter_groups
from kdx.errors import KdxError
from kdx.methods.annealing import split_budget
from kdx.methods.mate import PAPER_STUDENT_OPTIM, MateKD, generator_steps_in, is_generator_step
from kdx.methods.prokd import distinct_steps, every_kth
from kdx.store import TrajectoryCheckpoints
from kdx.training import student_recipe
from tests.conftest import compose_trial
from tests.methods.reference import ARCH, OPTIM, TINY_RUN, context, fit, models


# ---- which bound ends a phase ---------------------------------------------------------------
def test_epochs_that_run_follows_whichever_bound_ends_the_phase():
    # the case: 14 epochs of 500 batches, but only 78 steps allowed -> steps bound
    assert epochs_that_run(14, 500, 78) == -1
    assert epochs_that_run(14, 500, 14 * 500) == 14       # every epoch runs
    assert epochs_that_run(3, 2.5, 9) == 3                 # accumulation: ceil(2.5) = 3 steps an epoch
    assert epochs_that_run(3, 2.5, 8) == -1
    assert epochs_that_run(-1, 500, 100) == -1 and epochs_that_run(None, 500, 100) == -1
    assert epochs_that_run(4, float("inf"), 100) == -1


def logged(run_dir: Path, name: str) -> list[float]:
    values = []
    for log in sorted((run_dir / "csv").rglob("metrics.csv")):
        with open(log) as f:
            values += [float(row[name]) for row in csv.DictReader(f) if row.get(name) not in ("", None)]
    return values


def test_annealing_phi_follows_the_step_cap_inside_epoch_zero(run_kdx, tmp_path, shared_cache):
    """max_epochs=18 with max_steps=20: phase 1 gets ⌊20·14/18 + ½⌋ = 16 steps, all inside epoch 0
    (24 batches an epoch), so Φ climbs over those 16 steps: temp = 1 + ⌊7·s/16⌋ (it stalled at 1/7)."""
    results = run_kdx(*TINY_RUN, "method=annealing", "data.batch_size=4", "trainer.max_epochs=18",
                      "trainer.max_steps=20", "teacher_training.max_steps=3", "task.val_size=8",
                      tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed"
    phi = logged(tmp_path / "run", "train/phi")
    assert phi == pytest.approx([(1 + 7 * s // 16) / 7 for s in range(16)])
    temperature = logged(tmp_path / "run", "train/temperature")
    assert temperature == pytest.approx([7 * (1 - p) + 1 for p in phi])
    assert temperature[0] == pytest.approx(7) and temperature[-1] == pytest.approx(1)


def test_a_warmup_longer_than_the_phase_is_reported():
    """MATE-KD's official 2,138 warmup steps in a 378-step run: the lr never reaches its peak."""
    with pytest.warns(UserWarning, match="warmup_steps=2138 is not shorter than this phase's 378"):
        multiplier = lr_multiplier(OmegaConf.create({"warmup_steps": 2138, "schedule": "linear"}), 378)
    assert multiplier(377) == pytest.approx(378 / 2138)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lr_multiplier(OmegaConf.create({"warmup_steps": 38, "schedule": "linear"}), 378)


@pytest.mark.parametrize("total, fraction, expected", [
    (6, 0.75, (5, 1)),        # 4.5 rounds up (banker's rounding gave 4 + 2)
    (18, 14 / 18, (14, 4)), (4, 14 / 18, (3, 1)), (40, 0.75, (30, 10)),
    (5, 0.7, (4, 1)),         # 3.5 in floating point is 3.4999...: still rounds up
    (10, 0.25, (3, 7)),       # 2.5 -> 3
    (2, 0.01, (1, 1)), (2, 0.99, (1, 1)),
])
def test_split_budget_rounds_halves_up(total, fraction, expected):
    assert split_budget(total, fraction, "trainer.max_epochs") == expected


# ---- weight decay ---------------------------------------------------------------------------
def test_weight_decay_skips_biases_and_layernorm_weights(tiny):
    _, student = models(tiny)
    side = [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(3))]
    decayed, exempt = parameter_groups(student, side, 0.01)
    # by name, the usual transformer rule: "bias" or "LayerNorm" in the parameter's name
    expected_exempt = {id(p) for n, p in student.named_parameters() if n.endswith("bias") or "LayerNorm" in n}
    assert {id(p) for p in exempt["params"]} == expected_exempt | {id(side[1])}
    assert {id(p) for p in decayed["params"]} == ({id(p) for p in student.parameters()} - expected_exempt) | {id(side[0])}
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    everything, none = parameter_groups(student, side, 0.01, decay_all=True)
    assert len(everything["params"]) == len(list(student.parameters())) + 2 and not none["params"]


def test_decay_leaves_an_exempt_bias_untouched_by_decay():
    """AdamW with zero gradients moves only decayed parameters: the exempt group keeps its value."""
    layer = torch.nn.Linear(2, 2)
    groups = parameter_groups(layer, [], weight_decay=0.5)
    before_w, before_b = layer.weight.detach().clone(), layer.bias.detach().clone()
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(layer.weight, before_w * (1 - 0.1 * 0.5)) and torch.equal(layer.bias, before_b)


def test_warmup_steps_replace_the_warmup_ratio():
    cfg = OmegaConf.create({"schedule": "linear", "warmup_ratio": 0.5, "warmup_steps": 4})
    f = lr_multiplier(cfg, 12)
    assert [f(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 7 / 8])
    cfg.warmup_steps = None
    assert lr_multiplier(cfg, 12)(0) == pytest.approx(1 / 6)


# ---- MATE-KD / Combined-KD optimiser recipe ------------------------------------------------------
@pytest.mark.parametrize("method", ["mate", "combined"])
def test_mate_and_combined_default_to_the_official_recipe(method):
    cfg = compose_trial([f"method={method}"])
    assert cfg.method.generator_weight_decay == 0.0 and cfg.method.generator_schedule == "linear"
    job = MateKD(student_optim=cfg.method.student_optim)
    optim, clip = student_recipe(cfg, job)
    assert (optim.name, optim.weight_decay, optim.warmup_steps, optim.schedule, clip) == ("adam", 0.0, 2138, "linear", 5.0)
    assert optim.lr == cfg.optim.lr                      # the learning rate stays the run's
    # overridable: key by key (method.student_optim.warmup_steps=10), or null for the run's own optimiser
    custom = OmegaConf.merge(cfg.method.student_optim, {"warmup_steps": 10, "gradient_clip_val": 2})
    optim, clip = student_recipe(cfg, MateKD(student_optim=custom))
    assert optim.warmup_steps == 10 and clip == 2
    optim, clip = student_recipe(cfg, MateKD(student_optim=None))
    assert optim.name == "adamw" and optim.weight_decay == 0.01 and clip == cfg.trainer.gradient_clip_val


def test_student_recipe_rejects_unknown_keys():
    cfg = compose_trial([])
    with pytest.raises(KdxError, match="student_optim"):
        student_recipe(cfg, MateKD(student_optim={**PAPER_STUDENT_OPTIM, "warmup": 3}))


def test_generator_steps_in_counts_the_cycle():
    for batches in (0, 1, 2, 3, 7, 11, 23):
        assert generator_steps_in(batches, 2, 3) == sum(is_generator_step(s, 2, 3) for s in range(batches))
    assert generator_steps_in(220, 10, 100) == 20


def test_student_schedule_advances_on_student_steps_and_the_generator_decays(tiny):
    """5 batches, cycle 2 generator + 3 student: the student's schedule (warmup 2 steps, then linear
    decay over its 3 steps) steps 3 times, the generator's 2 times, each over its own count."""
    teacher, student = models(tiny)
    method = MateKD(generator={"arch": ARCH}, generator_steps=2, student_steps=3, generator_lr=1e-3)
    method.setup(context(tiny, student, teacher))
    optim = OmegaConf.create({**OmegaConf.to_container(OPTIM), "name": "adam", "weight_decay": 0.0,
                              "warmup_steps": 2})
    module = DistillationModule(student, method, tiny.spec, optim, teacher, student_clip=5.0)
    trainer = fit(module, tiny)
    student_scheduler, generator_scheduler = module.lr_schedulers()
    assert trainer.global_step == 5
    assert student_scheduler.last_epoch == 3 and generator_scheduler.last_epoch == 2
    # student: multiplier after 3 steps = 1 − (3 − 2)/(3 − 2) = 0; generator: 1 − 2/2 = 0
    assert module.optimizers()[0].param_groups[0]["lr"] == pytest.approx(0.0)
    assert module.optimizers()[1].param_groups[0]["lr"] == pytest.approx(0.0)
    assert isinstance(module.optimizers()[0].optimizer, torch.optim.Adam)


# ---- Pro-KD trajectory ----------------------------------------------------------------------
def test_prokd_trajectory_keeps_one_checkpoint_per_step():
    paths = [Path(p) for p in ("t/step-0000001.pt", "t/step-0000002.pt", "t/step-0000003.pt",
                               "t/epoch-001-step-0000003.pt", "t/step-0000004.pt", "t/epoch-002-step-0000006.pt")]
    kept = distinct_steps(paths)
    assert [p.name for p in kept] == ["step-0000001.pt", "step-0000002.pt", "step-0000003.pt",
                                      "step-0000004.pt", "epoch-002-step-0000006.pt"]
    assert every_kth(kept, 2)[-1].name == "epoch-002-step-0000006.pt"


def test_store_trajectory_saves_the_same_step_once(tmp_path):
    callback = TrajectoryCheckpoints(tmp_path / "trajectory", every_n_steps=3)
    module = SimpleNamespace(student=torch.nn.Linear(1, 1))
    for step in range(1, 7):
        callback.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, step)
        if step % 3 == 0:    # epochs of 3 steps end exactly where every-3-steps saves are
            callback.on_train_epoch_end(SimpleNamespace(global_step=step, current_epoch=step // 3 - 1), module)
    assert callback.saved == ["trajectory/step-0000003.pt", "trajectory/step-0000006.pt"]
    assert sorted(p.name for p in (tmp_path / "trajectory").iterdir()) == ["step-0000003.pt", "step-0000006.pt"]
