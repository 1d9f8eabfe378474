"""The Continuation-KD sinusoid toy: data against its formula, the MLP pair, config composition
(the task picks model=mlp), and end-to-end KD trials."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.models.mlp import mlp
from kdx.tasks.sinusoid import SinusoidTask
from kdx.training import monitor_mode

CONF = Path(__file__).parents[1] / "conf"


def yaml_task(**overrides) -> SinusoidTask:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "synthetic" / "sinusoid.yaml"))
    params = {k: v for k, v in cfg.items() if k not in ("defaults", "_target_")}
    return SinusoidTask(**{**params, **overrides})


def test_data_follows_the_formula():
    task = yaml_task(low_frequency=1.5, low_amplitude=0.8, high_frequency=9.0, high_amplitude=0.3,
                     noise_std=0.1, x_min=-2.0, x_max=3.0, train_size=3000, val_size=500)
    splits = task.splits()
    assert {k: len(v["labels"]) for k, v in splits.items()} == {"train": 3000, "val": 500, "val_noisy": 500}
    for split in splits.values():
        assert split["x"].shape == (len(split["labels"]), 1) and split["labels"].dtype == torch.float32
        assert split["x"].min() >= -2.0 and split["x"].max() <= 3.0
        assert split["idx"].tolist() == list(range(len(split["labels"])))
    x = splits["val"]["x"].double().squeeze(1).numpy()
    np.testing.assert_allclose(splits["val"]["labels"].numpy(), 0.8 * np.sin(2 * math.pi * 1.5 * x), atol=1e-5)
    for name in ("train", "val_noisy"):
        x = splits[name]["x"].double().squeeze(1).numpy()
        clean = 0.8 * np.sin(2 * math.pi * 1.5 * x) + 0.3 * np.sin(2 * math.pi * 9.0 * x)
        residual = splits[name]["labels"].double().numpy() - clean
        assert abs(residual.mean()) < 0.02 and abs(residual.std() - 0.1) < 0.01
    x = splits["train"]["x"].numpy()
    assert abs(x.mean() - 0.5) < 0.1 and abs(x.std() - 5 / math.sqrt(12)) < 0.1   # uniform on [-2, 3]


def test_noise_free_data_is_exactly_signal_plus_wiggle_and_seeded():
    task = yaml_task(noise_std=0.0, train_size=50, val_size=10)
    train = task.splits()["train"]
    x = train["x"].double().squeeze(1).numpy()
    expected = np.sin(2 * math.pi * 1.0 * x) + 0.25 * np.sin(2 * math.pi * 4.0 * x)
    np.testing.assert_allclose(train["labels"].numpy(), expected, atol=1e-5)
    assert torch.equal(yaml_task(noise_std=0.0, train_size=50, val_size=10).splits()["train"]["x"], train["x"])
    assert not torch.equal(yaml_task(noise_std=0.0, train_size=50, val_size=10, seed=1).splits()["train"]["x"],
                           train["x"])


def test_spec_is_regression_with_mse_headline_lower_is_better():
    spec = yaml_task().spec
    assert spec.num_labels == 1 and spec.is_regression
    assert spec.main_metric_name == "val/mse" and spec.metrics == ["mse", "pearson"]
    assert spec.eval_splits == ["val", "val_noisy"] and monitor_mode(spec) == "min"


def test_bad_knobs_are_clear_errors():
    with pytest.raises(KdxError, match="x_min"):
        yaml_task(x_min=1.0, x_max=1.0)
    with pytest.raises(KdxError, match="noise_std"):
        yaml_task(noise_std=-0.1)
    with pytest.raises(KdxError, match="no text"):
        list(yaml_task().training_texts())


def test_mlp_sizes_and_inputs():
    teacher, student = mlp([128, 128], num_labels=1), mlp([16, 16], num_labels=1)
    assert sum(p.numel() for p in teacher.parameters()) == (1 * 128 + 128) + (128 * 128 + 128) + (128 + 1)
    assert sum(p.numel() for p in student.parameters()) == (16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert teacher(x=torch.randn(5, 1)).shape == (5, 1)
    linear = mlp([], num_labels=1)
    x = torch.randn(4, 1)
    assert torch.allclose(linear(x=x), x @ linear.net[0].weight.T + linear.net[0].bias)
    with pytest.raises(KdxError, match="activation"):
        mlp([4], num_labels=1, activation="swish")
    with pytest.raises(KdxError, match="vector inputs"):
        teacher(input_ids=torch.zeros(2, 3, dtype=torch.long))


def test_batches_hold_x_labels_idx():
    dm = yaml_task(train_size=40, val_size=10).datamodule(None, OmegaConf.create(
        {"batch_size": 8, "eval_batch_size": 16, "num_workers": 0}))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "labels", "idx"} and batch["x"].shape == (8, 1)
    assert torch.equal(batch["labels"], dm.splits["train"]["labels"][batch["idx"]])
    assert [len(loader.dataset) for loader in dm.val_dataloader()] == [10, 10]


def compose_cfg(*overrides):
    from kdx.trial import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_task_picks_the_mlp_pair_and_the_command_line_wins():
    assert compose_cfg("task=synthetic/sinusoid").model.name == "mlp"
    assert compose_cfg("task=synthetic/sinusoid", "model=tiny").model.name == "tiny"
    plain = compose_cfg("task=synthetic")
    assert (plain.task.name, plain.model.name) == ("synthetic", "tiny")
    assert compose_cfg("task=vision/cifar100").model.name == "resnet110_to_resnet8"
    assert compose_cfg("task=vision/cifar10", "model=resnet56_to_resnet20").model.name == "resnet56_to_resnet20"


def test_kd_trial_on_the_sinusoid(tmp_path, run_kdx):
    results = run_kdx("method=kd", "task=synthetic/sinusoid", "task.train_size=256", "task.val_size=64",
                      "trainer.max_epochs=3", "teacher_training.max_epochs=3", tmp_path=tmp_path)
    assert results["status"] == "completed" and results["model"] == "mlp"
    assert results["main_metric"]["name"] == "val/mse"
    assert results["steps"] == 3 * 4                                   # 256 / 64 per epoch
    assert set(results["metrics"]) >= {"val/mse", "val/pearson", "val_noisy/mse", "val_noisy/pearson"}
    assert results["params"] == {"student": 321, "teacher": 16897}
    assert results["teacher_metrics"]["val/mse"] >= 0.0
    # the best checkpoint is the lowest val/mse seen during training (lower is better)
    import csv
    rows = [r for f in (tmp_path / "run").rglob("metrics.csv") for r in csv.DictReader(open(f))]
    seen = [float(r["val/mse"]) for r in rows if r.get("val/mse")]
    assert seen and results["main_metric"]["value"] == pytest.approx(min(seen), rel=1e-5)
